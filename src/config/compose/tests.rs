//! Tests of reading compose files: the shapes teams write, interpolation, profiles and the keys
//! that map onto the engine, and the errors that name what is wrong.

use super::*;

/// Reads `text` as a compose file, beside `files` (`.env`, env files), with compose profiles `active`.
fn read_with(text: &str, files: &[(&str, &str)], active: &[&str]) -> Result<Read, String> {
    let dir = std::env::temp_dir().join(format!(
        "cleantest-compose-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("compose.yml");
    std::fs::write(&path, text).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    let active: Vec<String> = active.iter().map(|p| p.to_string()).collect();
    let out = read(&path, &active);
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

fn read_text(text: &str) -> Result<Read, String> {
    read_with(text, &[], &[])
}

const FILE: &str = r#"
version: "3.8"
x-common: &common
  restart: always
services:
  db:
    image: postgres:15
    command: postgres -c "fsync=off"
    environment:
      POSTGRES_USER: app
      PORT: 5432
    ports: ["127.0.0.1:15432:5432", 6000, { target: 7000 }]
    healthcheck:
      test: ["CMD", "pg_isready", "-U", "app"]
      interval: 1s
      timeout: 2s
      retries: 5
    deploy: { resources: { limits: { memory: 512M, cpus: "0.5" } } }
    tmpfs: /var/lib/postgresql/data
    volumes: ["data:/data", "/anon", "./init.sql:/init.sql:ro"]
    networks: [back]
    container_name: fixed
  api:
    image: api
    environment: ["A=1", "B"]
    depends_on:
      db: { condition: service_healthy }
volumes:
  data:
networks:
  back:
"#;

#[test]
fn a_compose_file_becomes_session_services() {
    let Read {
        services,
        warnings,
        notes,
    } = read_text(FILE).unwrap();
    let db = &services["db"];
    assert_eq!(db.image, "postgres:15");
    assert_eq!(
        db.command.as_deref(),
        Some(&["postgres".to_string(), "-c".into(), "fsync=off".into()][..])
    );
    assert_eq!(db.env["POSTGRES_USER"], "app");
    assert_eq!(db.env["PORT"], "5432");
    assert_eq!(db.ports, vec![5432, 6000, 7000]);
    // The host side the file fixes is kept, and said.
    assert_eq!(db.fixed_ports, BTreeMap::from([(5432, 15432)]));
    assert!(
        notes.iter().any(|n| n.contains("fixed host port 15432")),
        "{notes:?}"
    );
    assert_eq!(
        db.ready.0,
        vec![Ready::Exec(vec![
            "pg_isready".into(),
            "-U".into(),
            "app".into()
        ])]
    );
    assert_eq!(db.memory, Some(Memory(512 << 20)));
    assert_eq!(db.cpus, Some(0.5));
    assert_eq!(db.tmpfs, vec!["/var/lib/postgresql/data".to_string()]);
    assert!(
        matches!(&db.mounts[0], Mount::Named { name, target } if name == "data" && target == "/data")
    );
    assert!(matches!(&db.mounts[1], Mount::Anonymous { target } if target == "/anon"));
    assert!(matches!(
        &db.mounts[2],
        Mount::Bind {
            read_only: true,
            ..
        }
    ));
    assert_eq!(services["api"].depends_on, vec!["db".to_string()]);
    assert_eq!(services["api"].env.get("A").map(String::as_str), Some("1"));
    // `version` is obsolete: nothing said. Ignored keys: one line for the file.
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("db: container_name"), "{warnings:?}");
}

#[test]
fn values_are_interpolated_from_the_environment_and_the_dot_env_file() {
    let text = r#"
services:
  db:
    image: "postgres:${PG_TAG:-14}"
    environment:
      POSTGRES_USER: "${DB_USER}"
      PLAIN: "$$HOME ${NOT_SET_ANYWHERE}"
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U $${POSTGRES_USER}"]
"#;
    let read = read_with(text, &[(".env", "PG_TAG=15\nDB_USER=app\n")], &[]).unwrap();
    let db = &read.services["db"];
    assert_eq!(db.image, "postgres:15");
    assert_eq!(db.env["POSTGRES_USER"], "app");
    assert_eq!(db.env["PLAIN"], "$HOME ");
    assert_eq!(
        db.ready.0,
        vec![Ready::Exec(vec![
            "sh".into(),
            "-c".into(),
            "pg_isready -U ${POSTGRES_USER}".into()
        ])]
    );
    assert!(
        read.warnings.iter().any(|w| w.contains("NOT_SET_ANYWHERE")),
        "{:?}",
        read.warnings
    );
    let err =
        read_text("services:\n  a:\n    image: \"${NO_TAG_HERE:?set NO_TAG_HERE to the tag}\"\n")
            .unwrap_err();
    assert!(err.contains("set NO_TAG_HERE to the tag"), "{err}");
    let err =
        read_text("services:\n  a:\n    image: x\n    command: [\"echo\", \"$ x\"]\n").unwrap_err();
    assert!(err.contains("$$"), "{err}");
}

#[test]
fn a_string_healthcheck_runs_verbatim_in_a_shell() {
    let text = "services:\n  db:\n    image: x\n    healthcheck:\n      test: psql -U postgres -tAc 'select 1'\n";
    let read = read_text(text).unwrap();
    assert_eq!(
        read.services["db"].ready.0,
        vec![Ready::Exec(vec![
            "sh".into(),
            "-c".into(),
            "psql -U postgres -tAc 'select 1'".into()
        ])]
    );
}

#[test]
fn engine_keys_profiles_and_env_files_are_read() {
    let text = r#"
services:
  db:
    image: postgres:15
    env_file: [db.env]
    environment: { B: from-environment }
    shm_size: 256m
    user: "999:999"
    working_dir: /srv
    tmpfs: ["/data:size=64m,mode=1777"]
    deploy:
      replicas: 1
      restart_policy: { condition: on-failure }
    restart: always
  debug:
    image: busybox
    profiles: [tools]
"#;
    let files = [("db.env", "A=from-file\nB=from-file\n")];
    let read = read_with(text, &files, &[]).unwrap();
    let db = &read.services["db"];
    assert_eq!(db.env["A"], "from-file");
    assert_eq!(db.env["B"], "from-environment");
    assert_eq!(db.shm_size, Some(Memory(256 << 20)));
    assert_eq!(db.user.as_deref(), Some("999:999"));
    assert_eq!(db.working_dir.as_deref(), Some("/srv"));
    assert_eq!(db.tmpfs, vec!["/data:size=64m,mode=1777".to_string()]);
    assert!(!read.services.contains_key("debug"));
    assert!(
        read.notes.iter().any(|n| n.contains("debug (tools)")),
        "{:?}",
        read.notes
    );
    let ignored = read.warnings.join("\n");
    assert!(
        ignored.contains("deploy.replicas") && ignored.contains("deploy.restart_policy"),
        "{ignored}"
    );
    let read = read_with(text, &files, &["tools"]).unwrap();
    assert!(read.services.contains_key("debug"));
}

#[test]
fn unsupported_keys_and_values_are_errors_naming_them() {
    for (text, says) in [
        (
            "services:\n  a:\n    image: x\n    privileged: true\n",
            "`privileged`",
        ),
        ("services:\n  a:\n    build: .\n", "does not build images"),
        ("services:\n  a:\n    command: x\n", "no `image`"),
        (
            "services:\n  a:\n    image: x\n    ports: [\"53/udp\"]\n",
            "tcp",
        ),
        (
            "services:\n  a:\n    image: x\n    depends_on:\n      b: { condition: service_completed_successfully }\n",
            "service_completed_successfully",
        ),
        ("services:\n  a:\n    image: x\nconfigs: {}\n", "`configs`"),
        (
            "services:\n  a:\n    image: x\nvolumes:\n  v: { external: true }\n",
            "external",
        ),
        ("services: [\n", ""),
    ] {
        let err = read_text(text).unwrap_err();
        assert!(err.contains(says), "{text}: {err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
