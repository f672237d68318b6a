//! What a set of containers takes of the engine, sampled: how many there are and how much memory the
//! running ones use (the engine's one-shot stats, without the page cache, as `docker stats` shows it).
//! A `Sampler` keeps the peaks, on a thread of its own, until it is stopped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptionsBuilder, StatsOptionsBuilder};
use futures_util::StreamExt;

use super::{Engine, block_on};
use crate::contract::ROLE_LABEL;

/// Time between samples: a container that lives less than this may be missed by the memory peak (the
/// proxy counts creates itself). Each sample is a list and one stats call per running container: at a
/// second, a suite with 50 containers asks the engine 50 cheap questions a second.
const PERIOD: Duration = Duration::from_secs(1);
/// Bound on one sample's engine calls: the last one is waited for at the end of the run, which a hung
/// engine must not hold up for long (the sweep after it has bounds of its own).
const SAMPLE_BOUND: Duration = Duration::from_secs(2);

/// The most seen at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Peak {
    pub containers: u64,
    pub memory: u64,
}

/// Samples the containers matching a label filter until stopped.
pub(crate) struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Peak>>,
}

impl Sampler {
    pub(crate) fn start(engine: &Engine, filter: Vec<String>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.clone();
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cleantest-usage".into())
            .spawn(move || {
                let mut peak = Peak::default();
                loop {
                    // A last sample once stopped: the end of a run, before its sweep, is when most
                    // containers may exist (left running), and a short run may have had no sample yet.
                    let last = stopped.load(Ordering::SeqCst);
                    if let Ok(Some(now)) = block_on(async {
                        tokio::time::timeout(SAMPLE_BOUND, sample(&engine, &filter)).await
                    }) {
                        peak.containers = peak.containers.max(now.containers);
                        peak.memory = peak.memory.max(now.memory);
                    }
                    if last {
                        return peak;
                    }
                    std::thread::park_timeout(PERIOD);
                }
            })
            .ok();
        Sampler { stop, thread }
    }

    /// Stops sampling; the peaks seen.
    pub(crate) fn stop(mut self) -> Peak {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(thread) => {
                thread.thread().unpark();
                thread.join().unwrap_or_default()
            }
            None => Peak::default(),
        }
    }
}

/// One sample: the containers (the engine-side reaper is not one of the session's own) and the memory
/// the running ones use.
async fn sample(engine: &Engine, filter: &[String]) -> Option<Peak> {
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
    let running = own
        .iter()
        .filter(|c| c.state.as_ref().map(|s| s.to_string()).as_deref() == Some("running"))
        .filter_map(|c| c.id.clone());
    let usages = futures_util::future::join_all(running.map(|id| memory_of(engine, id))).await;
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
