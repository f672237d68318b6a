//! What all connections of one proxy share (`Shared`: the engine, the session, the limits, what was
//! created and recorded), and the unit a client connection belongs to (`Unit`, found from its pid).
//! State only: the rules that read it are in `policy`, `guard` and `create`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::client::Upstream;
use super::in_flight::InFlight;
use crate::locked;
use cleantest_contract::{BINARY_LABEL, ENV_BINARY, ENV_TEST, SESSION_LABEL, TEST_LABEL};

/// What all connections of one proxy share.
#[derive(Debug)]
pub struct Shared {
    pub upstream: Upstream,
    /// The engine's maximum API version, for translating newer version prefixes down.
    pub engine_max: Option<String>,
    pub session: String,
    /// Labels set on every resource created through the proxy besides the session's (its owner).
    pub fixed: Vec<(String, String)>,
    /// Units (binary, test) that created a container through the proxy.
    pub created: Mutex<HashSet<(String, Option<String>)>>,
    /// Creates forwarded and not yet answered.
    pub in_flight: Arc<InFlight>,
    /// Where the anonymous volumes of created containers are recorded.
    pub anonymous_volumes: PathBuf,
    /// Told the anonymous volumes recorded, besides the file.
    pub volume_sink: Option<super::VolumeSink>,
    /// Whether an image declares `VOLUME`s, by image as create bodies name it.
    pub image_volumes: Mutex<HashMap<String, bool>>,
    /// The resource guard's limits (`guard`).
    pub guard: crate::proxy::Guard,
    /// Held from a container create's admission to its answer: creates are admitted one at a time.
    pub admission: tokio::sync::Mutex<()>,
    /// The most containers the session had, as counted at admissions.
    pub peak: Mutex<u64>,
    /// What the proxy forwards beyond its table (`proxy.allow-foreign`, `proxy.allow`).
    pub policy: crate::proxy::ProxyPolicy,
    /// The anonymous volumes recorded for the session, kept in memory as well as in the file: a full
    /// disk must not lose them, and removing one through the proxy is an action on the session's own.
    pub recorded: Mutex<HashSet<String>>,
    /// Why recorded names could not be written to the file, if they could not.
    pub unwritten: Mutex<Option<String>>,
}

impl Shared {
    /// Whether `name` is an anonymous volume the proxy recorded for the session.
    pub fn recorded_volume(&self, name: &str) -> bool {
        locked(&self.recorded).contains(name)
    }
}

/// The unit a client process belongs to: `CLEANTEST_BINARY`/`CLEANTEST_TEST` from its environment or
/// that of its nearest ancestor that has them (the process tree the runner started).
#[derive(Debug, Clone, Default)]
pub struct Unit {
    pub binary: Option<String>,
    pub test: Option<String>,
}

/// The unit of the process `pid`: its own environment's, or its nearest ancestor's that has one.
pub fn unit_of(pid: i32) -> Unit {
    for pid in cleantest_sys::ancestors(pid) {
        let env = cleantest_sys::environ(pid).unwrap_or_default();
        let mut unit = Unit::default();
        for kv in env.split(|b| *b == 0) {
            let Ok(text) = std::str::from_utf8(kv) else {
                continue;
            };
            match text.split_once('=') {
                Some((k, v)) if k == ENV_BINARY => unit.binary = Some(v.to_string()),
                Some((k, v)) if k == ENV_TEST => unit.test = Some(v.to_string()),
                _ => {}
            }
        }
        if unit.binary.is_some() {
            return unit;
        }
    }
    Unit::default()
}

/// The labels a resource created by `unit` gets: the session's, its owner's, the unit's.
pub fn labels_for(shared: &Shared, unit: &Unit) -> Vec<(String, String)> {
    let mut labels = vec![(SESSION_LABEL.to_string(), shared.session.clone())];
    labels.extend(shared.fixed.iter().cloned());
    if let Some(binary) = &unit.binary {
        labels.push((BINARY_LABEL.into(), binary.clone()));
    }
    if let Some(test) = &unit.test {
        labels.push((TEST_LABEL.into(), test.clone()));
    }
    labels
}
