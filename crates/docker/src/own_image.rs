//! An image of this very binary, so that it can run as a container on the session's engine (the
//! engine-side reaper). It holds the executable and the shared libraries the running process has
//! loaded, imported through the engine API (`POST /images/create?fromSrc=-`, as `docker import`): no
//! registry, no Dockerfile, no base image, nothing to pull.
//!
//! Layout: `/cleantest/cargo-cleantest` and `/cleantest/lib/*`. A dynamically linked binary is started
//! through its own loader (`ld.so --library-path /cleantest/lib EXE`), so the image needs no libc layout
//! of any distribution; which mapping is the loader comes from the kernel (`AT_BASE`), not from names.
//! The tag derives from the binary and its libraries (version, path, size, modification time), so one
//! build is imported once per engine; older images of ours (`cleantest.reaper-image` label) beyond the
//! newest few are removed when a new one is imported, unless a container still uses them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bollard::query_parameters::{
    CreateImageOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::{Engine, Error};
use cleantest_contract::REAPER_IMAGE_LABEL;

/// The repository of our images.
const REPOSITORY: &str = "cleantest-reaper";
/// Where the files go in the image.
const DIR: &str = "cleantest";
/// How many of our images an engine keeps (several versions of the runner may share it).
const KEEP: usize = 3;

/// An image of this binary on an engine.
#[derive(Debug, Clone)]
pub struct OwnImage {
    pub reference: String,
    /// The command that starts the binary in it; its own arguments follow.
    pub entry: Vec<String>,
}

/// What this process is made of: the executable, its loader (None when statically linked) and the
/// other shared libraries it has mapped.
#[derive(Debug)]
struct Files {
    exe: PathBuf,
    loader: Option<PathBuf>,
    libraries: Vec<PathBuf>,
}

/// Makes sure the engine has an image of this binary, importing it if not.
pub async fn ensure(engine: &Engine) -> Result<OwnImage, Error> {
    check_platform(engine).await?;
    let files = files().map_err(Error::io("read this process's own files"))?;
    let tag = tag(&files);
    let reference = format!("{REPOSITORY}:{tag}");
    let image = OwnImage {
        reference: reference.clone(),
        entry: entry(&files),
    };
    if engine.docker.inspect_image(&reference).await.is_ok() {
        return Ok(image);
    }
    let archive = tokio::task::spawn_blocking(move || archive(&files))
        .await
        .map_err(|e| Error::io("pack this binary into an image")(e.into()))?
        .map_err(Error::io("pack this binary into an image"))?;
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(REPOSITORY)
        .tag(&tag)
        .changes(vec![format!("LABEL {REAPER_IMAGE_LABEL}={tag}")])
        .build();
    let mut progress = engine.docker.create_image(
        Some(options),
        Some(bollard::body_full(archive.into())),
        None,
    );
    while let Some(step) = progress.next().await {
        let step = step.map_err(Error::engine(format!("import the image {reference}")))?;
        if let Some(said) = step.error_detail.and_then(|d| d.message) {
            return Err(Error::Said {
                doing: format!("import the image {reference}"),
                said,
            });
        }
    }
    prune(engine, &reference).await;
    Ok(image)
}

/// Our image runs only where the engine runs Linux on this machine's architecture, and only a Linux
/// build of this binary can be its program.
async fn check_platform(engine: &Engine) -> Result<(), Error> {
    if std::env::consts::OS != "linux" {
        return Err(Error::Setup(format!(
            "run this binary on the engine: it is built for {}, and the engine runs Linux containers \
             (pass --engine-reaper off)",
            std::env::consts::OS
        )));
    }
    let version = engine
        .docker
        .version()
        .await
        .map_err(Error::engine("ask the engine its platform"))?;
    let ours = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let (os, arch) = (
        version.os.unwrap_or_default(),
        version.arch.unwrap_or_default(),
    );
    if os != "linux" || arch != ours {
        return Err(Error::Setup(format!(
            "run this binary on the engine: the engine is {os}/{arch}, this binary linux/{ours}"
        )));
    }
    Ok(())
}

/// The executable and the shared objects the kernel has mapped for this process.
fn files() -> std::io::Result<Files> {
    let exe = cleantest_sys::own_executable()?;
    let maps = cleantest_sys::own_memory_map()?;
    let base = cleantest_sys::loader_base();
    let (loader, libraries) = shared_objects(&maps, base, &exe);
    Ok(Files {
        exe,
        loader,
        libraries,
    })
}

/// From `/proc/self/maps`: the mapping that starts at `base` is the loader, the other mapped `.so`
/// files are libraries. The executable itself, anonymous and special mappings are left out.
fn shared_objects(maps: &str, base: u64, exe: &Path) -> (Option<PathBuf>, Vec<PathBuf>) {
    let mut loader = None;
    let mut libraries = BTreeSet::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(path)) = (fields.next(), fields.nth(4)) else {
            continue;
        };
        let path = Path::new(path);
        if !path.is_absolute() || path == exe {
            continue;
        }
        let start = range
            .split('-')
            .next()
            .and_then(|s| u64::from_str_radix(s, 16).ok());
        if base != 0 && start == Some(base) {
            loader = Some(path.to_path_buf());
        } else if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains(".so"))
        {
            libraries.insert(path.to_path_buf());
        }
    }
    if let Some(loader) = &loader {
        libraries.remove(loader);
    }
    (loader, libraries.into_iter().collect())
}

/// The image's command prefix: the loader with the image's library directory, or the binary itself.
fn entry(files: &Files) -> Vec<String> {
    let exe = format!("/{DIR}/cargo-cleantest");
    match files.loader.as_deref().and_then(Path::file_name) {
        Some(loader) => vec![
            format!("/{DIR}/lib/{}", loader.to_string_lossy()),
            "--library-path".into(),
            format!("/{DIR}/lib"),
            exe,
        ],
        None => vec![exe],
    }
}

/// A tag that changes whenever one of the files does: this version, and each file's path, size and
/// modification time (hashing the contents of a debug build would cost seconds on every run).
fn tag(files: &Files) -> String {
    let mut hash = Sha256::new();
    hash.update(env!("CARGO_PKG_VERSION"));
    for path in std::iter::once(&files.exe)
        .chain(&files.loader)
        .chain(&files.libraries)
    {
        hash.update(path.as_os_str().as_encoded_bytes());
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::MetadataExt;
            hash.update(meta.len().to_le_bytes());
            hash.update(meta.mtime().to_le_bytes());
            hash.update(meta.mtime_nsec().to_le_bytes());
        }
    }
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The image's root filesystem as a tar archive.
fn archive(files: &Files) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    // Read through the kernel's handle: it still opens when the file was replaced on disk meanwhile.
    add(
        &mut tar,
        &cleantest_sys::own_executable_to_read(),
        &format!("{DIR}/cargo-cleantest"),
    )?;
    for lib in files.loader.iter().chain(&files.libraries) {
        let Some(name) = lib.file_name() else {
            continue;
        };
        add(
            &mut tar,
            lib,
            &format!("{DIR}/lib/{}", name.to_string_lossy()),
        )?;
    }
    tar.into_inner()
}

fn add(tar: &mut tar::Builder<Vec<u8>>, from: &Path, to: &str) -> std::io::Result<()> {
    let data = std::fs::read(from)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    tar.append_data(&mut header, to, data.as_slice())
}

/// Removes our images beyond the newest `KEEP`, other than `current`. An image a container still uses
/// is refused by the engine (no force), and stays.
async fn prune(engine: &Engine, current: &str) {
    let filters: std::collections::HashMap<String, Vec<String>> =
        [("label".to_string(), vec![REAPER_IMAGE_LABEL.to_string()])].into();
    let options = ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let Ok(mut images) = engine.docker.list_images(Some(options)).await else {
        return;
    };
    images.sort_by_key(|i| std::cmp::Reverse(i.created));
    for image in images.iter().skip(KEEP) {
        if image.repo_tags.iter().any(|t| t == current) {
            continue;
        }
        let options = RemoveImageOptionsBuilder::default().force(false).build();
        let _ = engine
            .docker
            .remove_image(&image.id, Some(options), None)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 fe:01 123 /usr/bin/cargo-cleantest
7f0000000000-7f0000020000 r--p 00000000 fe:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000020000-7f0000040000 r-xp 00020000 fe:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000100000-7f0000110000 r--p 00000000 fe:01 789 /usr/lib/x86_64-linux-gnu/libgcc_s.so.1
7f0000200000-7f0000201000 r--p 00000000 fe:01 999 /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
7f0000300000-7f0000301000 rw-p 00000000 00:00 0
7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0 [vdso]
";

    #[test]
    fn the_loader_is_the_mapping_at_at_base_and_the_rest_are_libraries() {
        let (loader, libs) =
            shared_objects(MAPS, 0x7f0000200000, Path::new("/usr/bin/cargo-cleantest"));
        assert_eq!(
            loader.as_deref(),
            Some(Path::new("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"))
        );
        assert_eq!(
            libs,
            vec![
                PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/usr/lib/x86_64-linux-gnu/libgcc_s.so.1"),
            ]
        );
    }

    #[test]
    fn a_static_binary_has_no_loader_and_runs_directly() {
        let (loader, libs) = shared_objects(MAPS, 0, Path::new("/usr/bin/cargo-cleantest"));
        assert_eq!(loader, None);
        assert_eq!(libs.len(), 3);
        let files = Files {
            exe: "/usr/bin/cargo-cleantest".into(),
            loader: None,
            libraries: Vec::new(),
        };
        assert_eq!(entry(&files), vec!["/cleantest/cargo-cleantest"]);
    }

    #[test]
    fn this_process_finds_its_own_loader() {
        let files = files().unwrap();
        // Test binaries are dynamically linked against glibc here: the loader must be found.
        assert!(files.loader.is_some(), "{files:?}");
        assert!(
            files
                .libraries
                .iter()
                .any(|l| l.to_string_lossy().contains("libc"))
        );
        assert_eq!(tag(&files), tag(&files));
    }
}
