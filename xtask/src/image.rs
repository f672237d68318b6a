//! The fixture image `cleantest-fixture:latest`, built without a registry: a root filesystem holding a
//! static busybox (Debian's busybox-static) and its applet links, imported through the engine's import
//! API (`POST /images/create?fromSrc=-`). Shared by `cargo xtask image` and the Docker tests, which
//! build it on demand.

use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;

pub const IMAGE: &str = "cleantest-fixture:latest";
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: [&str; 10] = [
    "sh", "sleep", "echo", "cat", "nc", "ls", "true", "mkdir", "touch", "wget",
];

/// Builds the image unless it exists (or always, with `rebuild`).
pub async fn ensure(docker: &Docker, rebuild: bool) -> Result<(), String> {
    if !rebuild && docker.inspect_image(IMAGE).await.is_ok() {
        return Ok(());
    }
    let rootfs = rootfs_tar()?;
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo("cleantest-fixture")
        .tag("latest")
        .build();
    let mut progress =
        docker.create_image(Some(options), Some(bollard::body_full(rootfs.into())), None);
    while let Some(step) = progress.next().await {
        step.map_err(|e| format!("import the fixture image: {e}"))?;
    }
    docker
        .inspect_image(IMAGE)
        .await
        .map(|_| ())
        .map_err(|e| format!("find the imported image {IMAGE}: {e}"))
}

fn rootfs_tar() -> Result<Vec<u8>, String> {
    let busybox = std::fs::read(BUSYBOX).map_err(|e| {
        format!(
            "read {BUSYBOX} ({e}); install Debian's busybox-static (apt-get install busybox-static)"
        )
    })?;
    let mut builder = tar::Builder::new(Vec::new());
    let mut dir = |path: &str| -> Result<(), String> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        builder
            .append_data(&mut header, path, std::io::empty())
            .map_err(|e| e.to_string())
    };
    dir("bin/")?;
    dir("tmp/")?;
    dir("data/")?;
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o755);
    header.set_size(busybox.len() as u64);
    builder
        .append_data(&mut header, "bin/busybox", busybox.as_slice())
        .map_err(|e| e.to_string())?;
    for applet in APPLETS {
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_mode(0o777);
        link.set_size(0);
        builder
            .append_link(&mut link, format!("bin/{applet}"), "busybox")
            .map_err(|e| e.to_string())?;
    }
    builder.into_inner().map_err(|e| e.to_string())
}
