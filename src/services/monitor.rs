//! Watching the session's services while the tests run: a thread per service waits on the engine
//! (`wait?condition=not-running`: no polling) and reports a container that stops before the session
//! ends, at once: "service db exited with code 137 (OOM-killed) at 12.3s". The run annotates the
//! failures reported after it, and says it in the summary and in JUnit, so that "the database died"
//! is not read as "40 tests failed". It also saves the services' logs when the run wants them kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Running;
use crate::docker::Engine;
use crate::docker::container::{self, State};
use crate::session::locked;

/// A service whose container stopped during the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Death {
    pub service: String,
    pub code: i64,
    pub oom_killed: bool,
    /// Removed (by someone else) rather than exited.
    pub removed: bool,
    /// Since the run started.
    pub at: Duration,
}

impl Death {
    /// `exited with code 137 (OOM-killed) at 12.3s`.
    pub(crate) fn what(&self) -> String {
        if self.removed {
            return format!("was removed at {:.1}s", self.at.as_secs_f64());
        }
        let oom = if self.oom_killed { " (OOM-killed)" } else { "" };
        format!(
            "exited with code {}{oom} at {:.1}s",
            self.code,
            self.at.as_secs_f64()
        )
    }

    /// `service db exited with code 137 at 12.3s`.
    pub(crate) fn line(&self) -> String {
        format!("service {} {}", self.service, self.what())
    }
}

/// The deaths seen so far, and what is watched; cheap to clone and to ask.
#[derive(Clone, Default)]
pub(crate) struct Monitor {
    deaths: Arc<Mutex<Vec<Death>>>,
    watch: Option<Arc<Watch>>,
    services: Arc<Mutex<Vec<Running>>>,
    /// The units waiting in `cleantest::Service::start`: (binary, test or "") → service.
    waiting: Arc<Mutex<Vec<(String, String, String)>>>,
}

/// What watching needs.
struct Watch {
    engine: Engine,
    started: Instant,
    ending: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("services", &self.services)
            .finish()
    }
}

impl Monitor {
    /// A monitor of services on `engine`. `ending` says the session is ending: its sweep stops the
    /// services, which is no news.
    pub(crate) fn new(
        engine: &Engine,
        started: Instant,
        ending: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> Monitor {
        Monitor {
            watch: Some(Arc::new(Watch {
                engine: engine.clone(),
                started,
                ending,
            })),
            ..Monitor::default()
        }
    }

    /// Starts watching a service that is up.
    pub(crate) fn add(&self, service: &Running) {
        let Some(watch) = self.watch.clone() else {
            return;
        };
        locked(&self.services).push(service.clone());
        let (service, deaths) = (service.clone(), self.deaths.clone());
        let _ = std::thread::Builder::new()
            .name(format!("service-{}", service.name))
            .spawn(move || {
                let engine = &watch.engine;
                container::wait_stopped(engine, &service.id);
                if (watch.ending)() {
                    return;
                }
                let (code, oom_killed, removed) = match container::state(engine, &service.id) {
                    State::Exited { code, oom_killed } => (code, oom_killed, false),
                    State::Running { .. } | State::Gone => (-1, false, true),
                };
                let death = Death {
                    service: service.name.clone(),
                    code,
                    oom_killed,
                    removed,
                    at: watch.started.elapsed(),
                };
                crate::output::err(format!("\n{}", death.line()));
                locked(&deaths).push(death);
            });
    }

    /// Notes that the unit (`binary`, `test` or empty in shared mode) waits for `service` to start, or
    /// (`waits` false) no longer does.
    pub(crate) fn waiting(&self, binary: &str, test: &str, service: &str, waits: bool) {
        let mut waiting = locked(&self.waiting);
        let entry = (binary.to_string(), test.to_string(), service.to_string());
        if waits {
            waiting.push(entry);
        } else if let Some(at) = waiting.iter().position(|w| *w == entry) {
            waiting.remove(at);
        }
    }

    /// The service a unit's test is waiting for, if any: a shared binary waits as a whole.
    pub(crate) fn waited_for(&self, binary: &str, test: &str) -> Option<String> {
        let waiting = locked(&self.waiting);
        waiting
            .iter()
            .find(|(b, t, _)| b == binary && (t == test || t.is_empty()))
            .map(|(_, _, s)| s.clone())
    }

    /// Writes each service's whole log to `dir/<service>.log` (before the sweep removes them); the
    /// directory, when any log was written.
    pub(crate) fn save_logs(&self, dir: &Path) -> Option<PathBuf> {
        let engine = &self.watch.as_ref()?.engine;
        let services = locked(&self.services).clone();
        let mut wrote = false;
        for service in &services {
            let Ok(log) = container::logs(engine, &service.id, None) else {
                continue;
            };
            let saved = std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(dir.join(format!("{}.log", service.name)), log));
            match saved {
                Ok(()) => wrote = true,
                Err(e) => crate::output::err(format!(
                    "warning: failed to save the log of service {} in {}: {e}",
                    service.name,
                    dir.display()
                )),
            }
        }
        wrote.then(|| dir.to_path_buf())
    }

    pub(crate) fn deaths(&self) -> Vec<Death> {
        locked(&self.deaths).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_death_says_which_service_how_and_when() {
        let death = Death {
            service: "db".into(),
            code: 137,
            oom_killed: true,
            removed: false,
            at: Duration::from_millis(12_345),
        };
        assert_eq!(
            death.line(),
            "service db exited with code 137 (OOM-killed) at 12.3s"
        );
    }
}
