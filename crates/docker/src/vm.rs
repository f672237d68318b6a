//! Whether the engine runs in a VM on this machine (Docker Desktop, colima, OrbStack, podman machine,
//! or any local engine of a runner that is not on Linux), told from the engine's own `/info`: then its
//! containers' pids are the VM's, the socket to mount into a container is the VM's, and the runner's
//! binary may not be able to run there. Classified from `OperatingSystem`, `Name` and `KernelVersion`
//! as these engines report them, and from the endpoint's path.

/// What `/info` says of the engine's host.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    pub operating_system: &'a str,
    pub name: &'a str,
    pub kernel: &'a str,
    /// The client's endpoint (`unix:///…`, `tcp://…`).
    pub endpoint: &'a str,
}

/// The VM the engine runs in, by the name users know it by; None for an engine on this machine's own
/// kernel, or a remote one.
pub fn classify(facts: &Facts<'_>, runner_on_linux: bool) -> Option<&'static str> {
    let os = facts.operating_system.to_ascii_lowercase();
    let kernel = facts.kernel.to_ascii_lowercase();
    let name = facts.name.to_ascii_lowercase();
    let local = facts.endpoint.starts_with("unix://") || facts.endpoint.starts_with("npipe://");
    if !local {
        return None;
    }
    if os.contains("docker desktop") || kernel.contains("linuxkit") {
        Some("Docker Desktop")
    } else if os.contains("orbstack") || kernel.contains("orbstack") {
        Some("OrbStack")
    } else if name.starts_with("colima") || facts.endpoint.contains("/.colima/") {
        Some("colima")
    } else if facts.endpoint.contains("/podman/machine/")
        || facts.endpoint.contains("podman-machine")
    {
        Some("podman machine")
    } else if !runner_on_linux {
        // A Linux engine on a machine that is not Linux can only be in a VM.
        Some("a VM")
    } else {
        None
    }
}

/// The VM of an engine, from its `/info` answer and the endpoint it was reached at.
pub fn of_info(
    info: &bollard::models::SystemInfo,
    endpoint: &str,
    runner_on_linux: bool,
) -> Option<&'static str> {
    classify(
        &Facts {
            operating_system: info.operating_system.as_deref().unwrap_or(""),
            name: info.name.as_deref().unwrap_or(""),
            kernel: info.kernel_version.as_deref().unwrap_or(""),
            endpoint,
        },
        runner_on_linux,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(os: &'a str, name: &'a str, kernel: &'a str, endpoint: &'a str) -> Facts<'a> {
        Facts {
            operating_system: os,
            name,
            kernel,
            endpoint,
        }
    }

    /// One recorded answer of `fixtures/engine-info`.
    #[derive(serde::Deserialize)]
    struct Recorded {
        source: String,
        runner: String,
        endpoint: String,
        expected: Option<String>,
        info: bollard::models::SystemInfo,
    }

    #[test]
    fn recorded_info_answers_of_vm_engines_are_classified() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/engine-info");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let recorded: Recorded = serde_json::from_str(&text).unwrap();
            let on_linux = recorded.runner == "linux";
            assert_eq!(
                of_info(&recorded.info, &recorded.endpoint, on_linux),
                recorded.expected.as_deref(),
                "{} ({})",
                path.display(),
                recorded.source
            );
            seen += 1;
        }
        // Docker Desktop on both Macs and on Linux, colima, OrbStack, podman machine, a local engine.
        assert!(seen >= 7, "{seen} recorded answers");
    }

    #[test]
    fn vm_engines_are_told_from_their_info() {
        let mac = false;
        let cases = [
            (
                facts(
                    "Docker Desktop",
                    "docker-desktop",
                    "6.10.14-linuxkit",
                    "unix:///Users/a/.docker/run/docker.sock",
                ),
                Some("Docker Desktop"),
            ),
            // Docker Desktop for Linux: a VM too, though the runner is on Linux.
            (
                facts(
                    "Docker Desktop",
                    "docker-desktop",
                    "6.10.14-linuxkit",
                    "unix:///home/a/.docker/desktop/docker.sock",
                ),
                Some("Docker Desktop"),
            ),
            (
                facts(
                    "Ubuntu 24.04.1 LTS",
                    "colima",
                    "6.8.0-50-generic",
                    "unix:///Users/a/.colima/default/docker.sock",
                ),
                Some("colima"),
            ),
            (
                facts(
                    "Alpine Linux edge (containerized)",
                    "orbstack",
                    "6.1.23-orbstack-00113-g6614aaccb205-dirty",
                    "unix:///Users/a/.orbstack/run/docker.sock",
                ),
                Some("OrbStack"),
            ),
            (
                facts(
                    "fedora",
                    "localhost.localdomain",
                    "6.12.7-200.fc41.aarch64",
                    "unix:///var/folders/x/T/podman/podman-machine-default-api.sock",
                ),
                Some("podman machine"),
            ),
        ];
        for (facts, expected) in cases {
            assert_eq!(classify(&facts, mac), expected, "{facts:?}");
        }
        // On Linux, Debian's own engine, and any remote engine, are not VMs of this machine.
        let debian = facts(
            "Debian GNU/Linux 12 (bookworm)",
            "ci-host",
            "6.1.0-28-amd64",
            "unix:///var/run/docker.sock",
        );
        assert_eq!(classify(&debian, true), None);
        assert_eq!(classify(&debian, mac), Some("a VM"));
        let remote = facts(
            "Docker Desktop",
            "docker-desktop",
            "6.10.14-linuxkit",
            "tcp://10.0.0.5:2376",
        );
        assert_eq!(classify(&remote, mac), None);
    }
}
