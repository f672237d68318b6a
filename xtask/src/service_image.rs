//! Real service images without a registry: `cleantest-postgres:15` and `cleantest-redis:7`, built from
//! the server binaries Debian's packages installed on this host (`postgresql-15`, `redis-server`), every
//! shared library `ldd` lists for them (at the same paths), busybox for a shell, and a small entrypoint,
//! imported through the engine's import API (`POST /images/create?fromSrc=-`) like the fixture image.
//! Labelled `cleantest.image=<name>`; never removes an image it did not build.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;

/// What a recipe adds to the image's files beyond the common ones.
type Extra = fn(&mut Tar) -> Result<(), String>;

/// One service image.
struct Recipe {
    name: &'static str,
    reference: &'static str,
    package: &'static str,
    /// Executables whose libraries are copied with them.
    binaries: &'static [&'static str],
    /// Directories copied whole (and the libraries of the `.so` files in them).
    trees: &'static [&'static str],
    /// Directories made in the image, owned by the service user (uid 999), with their mode.
    owned_dirs: &'static [(&'static str, u32)],
    user: &'static str,
    entrypoint: &'static str,
    /// The image's PATH: its tools are called by name in checks (`pg_isready`, `redis-cli ping`).
    path: &'static str,
    expose: &'static str,
    /// Adds what must be made on the host first (postgres: an initialised data directory).
    extra: Option<Extra>,
}

const POSTGRES: Recipe = Recipe {
    name: "postgres",
    reference: "cleantest-postgres:15",
    package: "postgresql-15",
    binaries: &[
        "/usr/lib/postgresql/15/bin/postgres",
        "/usr/lib/postgresql/15/bin/initdb",
        "/usr/lib/postgresql/15/bin/pg_ctl",
        "/usr/lib/postgresql/15/bin/pg_isready",
        "/usr/lib/postgresql/15/bin/psql",
    ],
    trees: &[
        "/usr/lib/postgresql/15/lib",
        "/usr/share/postgresql/15",
        "/usr/share/zoneinfo",
    ],
    owned_dirs: &[("var/lib/postgresql", 0o755), ("var/run/postgresql", 0o775)],
    user: "postgres",
    // initdb into PGDATA on first start (a subdirectory, so that a tmpfs or volume mounted at
    // /var/lib/postgresql/data, owned by root, still works), trust auth from anywhere (a test
    // database), then postgres in the foreground; `postgres -c k=v` as the command passes its flags on.
    entrypoint: r#"#!/bin/sh
set -e
export PGDATA="${PGDATA:-/var/lib/postgresql/data/pgdata}"
bin=/usr/lib/postgresql/15/bin
template=/var/lib/postgresql/template
if [ ! -s "$PGDATA/PG_VERSION" ] && [ -s "$template/PG_VERSION" ] && [ "${POSTGRES_USER:-postgres}" = postgres ]; then
  # A data directory initialised when the image was built: a copy instead of seconds of initdb.
  mkdir -p "$PGDATA"
  cp -a "$template/." "$PGDATA/"
  chmod 700 "$PGDATA"
elif [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA"
  "$bin/initdb" -D "$PGDATA" -U "${POSTGRES_USER:-postgres}" --auth=trust --locale=C -E UTF8 >/dev/null
  echo "host all all 0.0.0.0/0 trust" >> "$PGDATA/pg_hba.conf"
  echo "host all all ::/0 trust" >> "$PGDATA/pg_hba.conf"
fi
# As the official image: POSTGRES_DB (default: the user's name) is made, POSTGRES_PASSWORD is set,
# and /docker-entrypoint-initdb.d/*.sql and *.sh run, once, on a first start, by a server that
# listens on no port meanwhile.
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
if [ ! -e "$PGDATA/.cleantest-initialised" ]; then
  scripts="$(ls /docker-entrypoint-initdb.d 2>/dev/null || true)"
  if [ "$db" != postgres ] || [ -n "$POSTGRES_PASSWORD" ] || [ -n "$scripts" ]; then
    "$bin/pg_ctl" -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" -w start >/dev/null
    sql() { "$bin/psql" -v ON_ERROR_STOP=1 -h /var/run/postgresql -U "$user" -q "$@"; }
    if [ "$db" != postgres ]; then sql -d postgres -c "CREATE DATABASE \"$db\""; fi
    if [ -n "$POSTGRES_PASSWORD" ]; then sql -d postgres -c "ALTER USER \"$user\" PASSWORD '$POSTGRES_PASSWORD'"; fi
    for f in /docker-entrypoint-initdb.d/*; do
      case "$f" in
        *.sql) sql -d "$db" -f "$f" ;;
        *.sh) . "$f" ;;
      esac
    done
    "$bin/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
  fi
  touch "$PGDATA/.cleantest-initialised"
fi
if [ "$1" = postgres ]; then shift; fi
if [ -n "$1" ] && [ "${1#-}" = "$1" ]; then exec "$@"; fi
exec "$bin/postgres" -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "$@"
"#,
    path: "/usr/lib/postgresql/15/bin:/usr/local/bin:/usr/bin:/bin",
    expose: "5432",
    extra: Some(postgres_template),
};

const REDIS: Recipe = Recipe {
    name: "redis",
    reference: "cleantest-redis:7",
    package: "redis-server",
    binaries: &["/usr/bin/redis-server", "/usr/bin/redis-cli"],
    trees: &[],
    owned_dirs: &[("data", 0o755)],
    user: "redis",
    // Redis 7 refuses clients from other addresses while it has no password (protected mode), and
    // published ports arrive from the bridge: a test server turns that off.
    entrypoint: r#"#!/bin/sh
set -e
cd /data
if [ -z "$1" ] || [ "${1#-}" != "$1" ]; then set -- redis-server "$@"; fi
if [ "$1" = redis-server ]; then shift; exec /usr/bin/redis-server --protected-mode no "$@"; fi
exec "$@"
"#,
    path: "/usr/local/bin:/usr/bin:/bin",
    expose: "6379",
    extra: None,
};

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: [&str; 14] = [
    "sh", "sleep", "echo", "cat", "nc", "ls", "true", "mkdir", "touch", "wget", "rm", "id", "env",
    "ps",
];

/// `cargo xtask image postgres|redis [--rebuild]`.
pub fn build(name: &str, rebuild: bool) -> Result<(), String> {
    let recipe = match name {
        "postgres" => &POSTGRES,
        "redis" => &REDIS,
        other => {
            return Err(format!(
                "build an image named {other:?}: known are postgres, redis"
            ));
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("start a runtime: {e}"))?;
    runtime.block_on(async {
        let docker = Docker::connect_with_defaults()
            .map_err(|e| format!("connect to the Docker engine: {e}"))?
            .negotiate_version()
            .await
            .map_err(|e| format!("reach the Docker engine: {e}"))?;
        // An image of an older recipe is built again: what tests rely on (its PATH, the entrypoint's
        // variables) changes with the recipe.
        let current = docker
            .inspect_image(recipe.reference)
            .await
            .ok()
            .and_then(|i| i.config?.labels?.get("cleantest.recipe").cloned());
        if !rebuild && current.as_deref() == Some(recipe_version(recipe).as_str()) {
            eprintln!("xtask: {} is ready", recipe.reference);
            return Ok(());
        }
        let rootfs = rootfs(recipe)?;
        let (repo, tag) = recipe.reference.split_once(':').expect("name:tag");
        let options = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .changes(vec![
                format!("USER {}", recipe.user),
                format!("EXPOSE {}", recipe.expose),
                format!("ENV PATH={}", recipe.path),
                format!("LABEL cleantest.recipe={}", recipe_version(recipe)),
                r#"ENTRYPOINT ["/docker-entrypoint.sh"]"#.to_string(),
                format!("LABEL cleantest.image={}", recipe.name),
            ])
            .build();
        let mut progress =
            docker.create_image(Some(options), Some(bollard::body_full(rootfs.into())), None);
        while let Some(step) = progress.next().await {
            let step = step.map_err(|e| format!("import {}: {e}", recipe.reference))?;
            if let Some(error) = step.error_detail.and_then(|d| d.message) {
                return Err(format!("import {}: {error}", recipe.reference));
            }
        }
        eprintln!("xtask: {} is ready", recipe.reference);
        Ok(())
    })
}

/// A digest of what the recipe puts in the image besides the host's files (FNV-1a, hex).
fn recipe_version(recipe: &Recipe) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let parts = [recipe.entrypoint, recipe.path, recipe.user, recipe.expose];
    for byte in parts
        .iter()
        .chain(recipe.binaries)
        .chain(recipe.trees)
        .flat_map(|p| p.bytes().chain([0]))
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The image's root filesystem as a tar archive.
fn rootfs(recipe: &Recipe) -> Result<Vec<u8>, String> {
    for binary in recipe.binaries {
        if !Path::new(binary).exists() {
            return Err(format!(
                "find {binary}; install Debian's {} (apt-get install {})",
                recipe.package, recipe.package
            ));
        }
    }
    let busybox = std::fs::read(BUSYBOX).map_err(|e| {
        format!(
            "read {BUSYBOX} ({e}); install Debian's busybox-static (apt-get install busybox-static)"
        )
    })?;
    let mut files: BTreeSet<PathBuf> = recipe.binaries.iter().map(PathBuf::from).collect();
    for tree in recipe.trees {
        walk(Path::new(tree), &mut files);
    }
    let mut libraries = BTreeSet::new();
    for file in &files {
        let is_elf = file.extension().is_some_and(|e| e == "so")
            || recipe.binaries.iter().any(|b| Path::new(b) == file);
        if is_elf {
            libraries.extend(ldd(file));
        }
    }
    let mut tar = Tar::new();
    for dir in ["bin", "etc", "tmp", "dev", "proc", "sys"] {
        tar.dir(dir, if dir == "tmp" { 0o1777 } else { 0o755 }, 0)?;
    }
    for (dir, mode) in recipe.owned_dirs {
        tar.dir(dir, *mode, 999)?;
    }
    tar.file("bin/busybox", &busybox, 0o755)?;
    for applet in APPLETS {
        tar.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    tar.file(
        "etc/passwd",
        format!(
            "root:x:0:0:root:/root:/bin/sh\n{0}:x:999:999:{0}:/var/lib/{0}:/bin/sh\n",
            recipe.user
        )
        .as_bytes(),
        0o644,
    )?;
    tar.file(
        "etc/group",
        format!("root:x:0:\n{0}:x:999:\n", recipe.user).as_bytes(),
        0o644,
    )?;
    tar.file("docker-entrypoint.sh", recipe.entrypoint.as_bytes(), 0o755)?;
    if let Some(extra) = recipe.extra {
        extra(&mut tar)?;
    }
    for path in files.iter().chain(&libraries) {
        let data = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let inside = path.to_string_lossy().trim_start_matches('/').to_string();
        tar.file(&inside, &data, 0o755)?;
    }
    tar.finish()
}

/// `var/lib/postgresql/template`: a data directory initialised on the host by the host's own initdb
/// (as the `postgres` user the package made: initdb refuses root), with trust authentication from
/// anywhere, owned by the image's postgres user (999). The entrypoint copies it into an empty PGDATA,
/// so a fresh container is ready in about a second instead of after initdb's several.
fn postgres_template(tar: &mut Tar) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("cleantest-pg-template-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let chown = Command::new("chown")
        .args(["postgres:postgres"])
        .arg(&dir)
        .status();
    let data = dir.join("data");
    let initdb = Command::new("runuser")
        .args([
            "-u",
            "postgres",
            "--",
            "/usr/lib/postgresql/15/bin/initdb",
            "-D",
        ])
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "--locale=C", "-E", "UTF8"])
        .output();
    let result = match (chown, initdb) {
        (Ok(c), Ok(out)) if c.success() && out.status.success() => {
            let hba = data.join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba).map_err(|e| e.to_string())?;
            text.push_str("host all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n");
            std::fs::write(&hba, text).map_err(|e| e.to_string())?;
            add_tree(tar, &data, "var/lib/postgresql/template")
        }
        (_, Ok(out)) => Err(format!(
            "initialise a template data directory (runuser -u postgres -- initdb): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        (_, Err(e)) => Err(format!("run runuser for initdb: {e}")),
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Adds the tree under `from` at `to`, owned by uid and gid 999, with its modes.
fn add_tree(tar: &mut Tar, from: &Path, to: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o700)
    };
    tar.owned_dir(to, mode(from), 999)?;
    for entry in std::fs::read_dir(from)
        .map_err(|e| e.to_string())?
        .flatten()
    {
        let path = entry.path();
        let inside = format!("{to}/{}", entry.file_name().to_string_lossy());
        if path.is_dir() {
            add_tree(tar, &path, &inside)?;
        } else {
            let data = std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
            tar.owned_file(&inside, &data, mode(&path), 999)?;
        }
    }
    Ok(())
}

/// Every regular file under `dir` (symbolic links followed as files).
fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.is_file() {
            out.insert(path);
        }
    }
}

/// The libraries `ldd` lists for `file`, the loader included, at the paths it lists them.
fn ldd(file: &Path) -> Vec<PathBuf> {
    let Ok(out) = Command::new("ldd").arg(file).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// A tar archive with numeric owners, directories made once.
struct Tar {
    builder: tar::Builder<Vec<u8>>,
    dirs: BTreeSet<String>,
}

impl Tar {
    fn new() -> Tar {
        Tar {
            builder: tar::Builder::new(Vec::new()),
            dirs: BTreeSet::new(),
        }
    }

    fn dir(&mut self, path: &str, mode: u32, owner: u64) -> Result<(), String> {
        if !self.dirs.insert(path.to_string()) {
            return Ok(());
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, 0o755, 0)?;
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(mode);
        header.set_uid(owner);
        header.set_gid(owner);
        header.set_size(0);
        self.builder
            .append_data(&mut header, format!("{path}/"), std::io::empty())
            .map_err(|e| e.to_string())
    }

    fn file(&mut self, path: &str, data: &[u8], mode: u32) -> Result<(), String> {
        self.owned_file(path, data, mode, 0)
    }

    /// A directory owned by `owner` (its parents are made root's).
    fn owned_dir(&mut self, path: &str, mode: u32, owner: u64) -> Result<(), String> {
        self.dir(path, mode, owner)
    }

    fn owned_file(&mut self, path: &str, data: &[u8], mode: u32, owner: u64) -> Result<(), String> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, 0o755, 0)?;
        }
        let mut header = tar::Header::new_gnu();
        header.set_mode(mode);
        header.set_uid(owner);
        header.set_gid(owner);
        header.set_size(data.len() as u64);
        self.builder
            .append_data(&mut header, path, data)
            .map_err(|e| e.to_string())
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<(), String> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        self.builder
            .append_link(&mut header, path, target)
            .map_err(|e| e.to_string())
    }

    fn finish(self) -> Result<Vec<u8>, String> {
        self.builder.into_inner().map_err(|e| e.to_string())
    }
}
