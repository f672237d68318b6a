//! The template's migrations, once per session: `*.sql` files copied into the container and applied
//! by psql in name order, or the user's command run on the host with the service's exports naming the
//! template. A failure is the migration's own output, for the start's error.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::server::{Server, TEMPLATE};
use crate::config::services::Migrate;
use crate::services::Running;

/// Where the SQL files go in the container.
const SQL_DIR: &str = "tmp/cleantest-migrate";

/// How long migrations may take in all.
const MIGRATE_BOUND: Duration = Duration::from_secs(600);

/// Applies `migrate` to the template of `server` (the service `running`).
pub(super) fn apply(server: &Server, migrate: &Migrate, running: &Running) -> Result<(), String> {
    match migrate {
        Migrate::Sql(dir) => sql(server, dir),
        Migrate::Command { argv, dir } => command(argv, dir, running),
    }
}

/// The `*.sql` files of `dir`, in name order.
fn sql_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn sql(server: &Server, dir: &Path) -> Result<(), String> {
    let files = sql_files(dir)?;
    if files.is_empty() {
        return Err(format!(
            "{} holds no *.sql file to migrate the template with",
            dir.display()
        ));
    }
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o777);
    header.set_size(0);
    let fail = |e: std::io::Error| format!("pack the migrations of {}: {e}", dir.display());
    archive
        .append_data(&mut header, SQL_DIR, std::io::empty())
        .map_err(fail)?;
    let (mut args, mut names) = (Vec::new(), Vec::new());
    for (i, file) in files.iter().enumerate() {
        let text = std::fs::read(file).map_err(|e| format!("read {}: {e}", file.display()))?;
        let name = file
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        // Numbered, so that a name with spaces or quotes is never a path psql has to parse.
        let inside = format!("{SQL_DIR}/{i:05}.sql");
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(text.len() as u64);
        archive
            .append_data(&mut header, &inside, text.as_slice())
            .map_err(fail)?;
        args.extend(["-f".to_string(), format!("/{inside}")]);
        names.push((format!("/{inside}"), name));
    }
    let archive = archive.into_inner().map_err(fail)?;
    crate::docker::container::upload(server.engine(), server.id(), "/", archive)
        .map_err(|e| format!("copy the migrations into the container: {e}"))?;
    server
        .psql(TEMPLATE, &args, MIGRATE_BOUND)
        .map(drop)
        .map_err(|e| {
            // psql names the copies; the user knows the files.
            let said = names
                .iter()
                .fold(e, |said, (inside, name)| said.replace(inside, name));
            format!("the migrations of {} failed: {said}", dir.display())
        })
}

/// Runs the user's migration command, bounded; its output is the error when it fails.
fn command(argv: &[String], dir: &Path, running: &Running) -> Result<(), String> {
    let shown = argv.join(" ");
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .current_dir(dir)
        .envs(crate::services::env_of(running))
        .envs(running.exports_for(Some(TEMPLATE)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command
        .spawn()
        .map_err(|e| format!("the migration command `{shown}` could not start: {e}"))?;
    let pid = child.id() as i32;
    let (done, waited) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output = match waited.recv_timeout(MIGRATE_BOUND) {
        Ok(output) => output.map_err(|e| format!("wait for `{shown}`: {e}"))?,
        Err(_) => {
            // The child this function started, by its own pid.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(format!(
                "the migration command `{shown}` did not end within {}s",
                MIGRATE_BOUND.as_secs()
            ));
        }
    };
    if output.status.success() {
        return Ok(());
    }
    let mut said = String::from_utf8_lossy(&output.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = said.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    Err(format!(
        "the migration command `{shown}` failed ({}):\n{tail}",
        output.status
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sql_files_in_name_order() {
        let dir = std::env::temp_dir().join(format!("ct-migrate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["002_b.sql", "001_a.sql", "notes.txt", "010_c.sql"] {
            std::fs::write(dir.join(name), "select 1;").unwrap();
        }
        let names: Vec<String> = sql_files(&dir)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for name in ["002_b.sql", "001_a.sql", "notes.txt", "010_c.sql"] {
            std::fs::remove_file(dir.join(name)).unwrap();
        }
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(names, ["001_a.sql", "002_b.sql", "010_c.sql"]);
    }
}
