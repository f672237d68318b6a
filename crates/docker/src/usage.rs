//! What a set of containers takes of the engine, sampled: how many there are and how much memory the
//! running ones use (the engine's one-shot stats, without the page cache, as `docker stats` shows it).
//! A `Sampler` keeps the peaks, on a thread of its own, until it is stopped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptionsBuilder, StatsOptionsBuilder};
use futures_util::StreamExt;

use super::{Engine, block_on};
use crate::locked;
use cleantest_contract::ROLE_LABEL;

/// Time between samples: a container that lives less than this may be missed by the memory peak (the
/// proxy counts creates itself). Each sample is a list and one stats call per running container: at a
/// second, a suite with 50 containers asks the engine 50 cheap questions a second.
const PERIOD: Duration = Duration::from_secs(1);
/// Stats calls in flight at once.
const STATS_AT_ONCE: usize = 4;
/// Bound on one sample's engine calls: the last one is waited for at the end of the run, which a hung
/// engine must not hold up for long (the sweep after it has bounds of its own).
const SAMPLE_BOUND: Duration = Duration::from_secs(2);

/// The most seen at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peak {
    pub containers: u64,
    pub memory: u64,
}

/// Samples the containers matching a label filter until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<Mutex<Peak>>,
    thread: Option<Thread>,
}

impl Sampler {
    pub fn start(engine: &Engine, filter: Vec<String>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(Mutex::new(Peak::default()));
        let (stopped, seen, on) = (stop.clone(), peak.clone(), engine.clone());
        let thread = std::thread::Builder::new()
            .name("cleantest-usage".into())
            .spawn(move || {
                // The first sample comes a period after the start: at the start the session has no
                // container yet, and the engine's answer would cost the run's start-up for nothing.
                loop {
                    std::thread::park_timeout(PERIOD);
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(Some(now)) = block_on(async {
                        tokio::time::timeout(SAMPLE_BOUND, sample(&on, &filter, true)).await
                    }) {
                        locked(&seen).absorb(now);
                    }
                }
            })
            .ok()
            .map(|handle| handle.thread().clone());
        Sampler { stop, peak, thread }
    }

    /// Stops sampling; the peaks seen. A sample under way is not waited for: it ends on its own, and
    /// the end of a run must not wait on the engine for a number (the sweep, which lists anyway, says
    /// how many containers were left at the end).
    pub fn stop(self) -> Peak {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = &self.thread {
            thread.unpark();
        }
        *locked(&self.peak)
    }
}

impl Peak {
    pub fn absorb(&mut self, now: Peak) {
        self.containers = self.containers.max(now.containers);
        self.memory = self.memory.max(now.memory);
    }
}

/// One sample: the containers (the engine-side reaper is not one of the session's own) and, with
/// `memory`, the memory the running ones use (a few stats calls at once, so that a suite with many
/// containers does not flood the engine).
async fn sample(engine: &Engine, filter: &[String], memory: bool) -> Option<Peak> {
    let filters: HashMap<String, Vec<String>> =
        HashMap::from([("label".to_string(), filter.to_vec())]);
    let containers = engine
        .docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .ok()?;
    let own: Vec<_> = containers
        .into_iter()
        .filter(|c| c.labels.as_ref().and_then(|l| l.get(ROLE_LABEL)).is_none())
        .collect();
    let running: Vec<String> = own
        .iter()
        .filter(|c| c.state.as_ref().map(|s| s.to_string()).as_deref() == Some("running"))
        .filter_map(|c| c.id.clone())
        .filter(|_| memory)
        .collect();
    let usages: Vec<u64> = futures_util::stream::iter(running)
        .map(|id| memory_of(engine, id))
        .buffer_unordered(STATS_AT_ONCE)
        .collect()
        .await;
    Some(Peak {
        containers: own.len() as u64,
        memory: usages.into_iter().sum(),
    })
}

/// The memory a container uses now, without its inactive page cache (0 when the engine does not say).
async fn memory_of(engine: &Engine, id: String) -> u64 {
    let options = StatsOptionsBuilder::default()
        .stream(false)
        .one_shot(true)
        .build();
    let Some(Ok(stats)) = engine.docker.stats(&id, Some(options)).next().await else {
        return 0;
    };
    let Some(memory) = stats.memory_stats else {
        return 0;
    };
    let cache = memory
        .stats
        .as_ref()
        .and_then(|s| {
            s.get("inactive_file")
                .or_else(|| s.get("total_inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    memory.usage.unwrap_or(0).saturating_sub(cache)
}

/// A byte count as `512m` or `1.5g`, as users write limits.
pub fn human_bytes(bytes: u64) -> String {
    let gib = bytes as f64 / f64::from(1u32 << 30);
    if gib >= 1.0 {
        format!("{}g", trim(gib))
    } else if bytes >= 1 << 20 {
        format!("{}m", trim(bytes as f64 / f64::from(1u32 << 20)))
    } else {
        format!("{}k", bytes >> 10)
    }
}

fn trim(n: f64) -> String {
    let text = format!("{n:.1}");
    text.strip_suffix(".0").unwrap_or(&text).to_string()
}
