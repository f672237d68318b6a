//! Where a process came from, on a platform where the runner cannot be a child subreaper (macOS, or a
//! kernel that refuses it).
//!
//! There, a process that leaves its unit's group (`setsid`) and outlives its parent is re-parented to
//! launchd (or init), out of the runner's sight: only the environment scan would still find it, and
//! not if it cleared its environment. So the runner takes snapshots of the process table while units
//! run, and remembers every process that descends from a unit's group, by pid *and* start time (a pid
//! alone may be reused). A remembered process that is still alive but no longer in its unit's group
//! has escaped: it is attributed to the unit it came from, and killed once that unit is over.
//!
//! The logic is platform-neutral and tested against a fake process table; `snapshot` reads the real
//! one through `sys`. A process that escapes between two snapshots (a double fork whose middle process
//! exits at once) is not seen here: that is what the weaker tier of docs/guarantees.md says.

use std::collections::{BTreeSet, HashMap};

use super::locked;
use super::orphans::Escaped;
use crate::sys;

/// One process in a snapshot of the process table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    /// With the pid, names one process for good.
    pub start_time: u64,
}

/// The remembered descent of the processes of the run's units.
#[derive(Debug, Default)]
pub(crate) struct Lineage {
    /// `(pid, start time)` → the unit group it descends from.
    known: HashMap<(i32, u64), i32>,
}

/// How many processes are remembered at most: a unit that forks without pause must not grow the
/// runner's memory without bound. Past it, new processes are no longer remembered (the environment
/// scan still finds them).
const KNOWN_BOUND: usize = 65_536;

impl Lineage {
    /// Remembers, from one snapshot, every process that descends from one of `groups` (a unit's process
    /// group): a member of the group, or a child of a process already descended from one.
    pub(crate) fn observe(&mut self, table: &[Entry], groups: &BTreeSet<i32>) {
        let by_pid: HashMap<i32, &Entry> = table.iter().map(|e| (e.pid, e)).collect();
        for entry in table {
            if self.known.len() >= KNOWN_BOUND {
                return;
            }
            if let Some(group) = self.origin(entry, &by_pid, groups) {
                self.known.insert((entry.pid, entry.start_time), group);
            }
        }
    }

    /// The unit group `entry` descends from, following its parents up the snapshot (at most as many
    /// steps as the table has processes, so a garbled table cannot loop).
    fn origin(
        &self,
        entry: &Entry,
        by_pid: &HashMap<i32, &Entry>,
        groups: &BTreeSet<i32>,
    ) -> Option<i32> {
        let mut at = entry;
        for _ in 0..=by_pid.len() {
            if let Some(&group) = self.known.get(&(at.pid, at.start_time)) {
                return Some(group);
            }
            if groups.contains(&at.pgid) {
                return Some(at.pgid);
            }
            // A parent started after its child is not its parent: the pid was reused.
            let parent = by_pid.get(&at.ppid)?;
            if parent.pid == at.pid || parent.start_time > at.start_time {
                return None;
            }
            at = parent;
        }
        None
    }

    /// Remembered processes still alive in `table` (the same pid and start time) that are no longer in
    /// the group they came from, with that group. Forgets the ones that are gone.
    pub(crate) fn escaped(&mut self, table: &[Entry]) -> Vec<(Entry, i32)> {
        let alive: HashMap<(i32, u64), &Entry> =
            table.iter().map(|e| ((e.pid, e.start_time), e)).collect();
        self.known.retain(|key, _| alive.contains_key(key));
        let mut out: Vec<(Entry, i32)> = self
            .known
            .iter()
            .filter_map(|(key, &group)| {
                let entry = alive[key];
                (entry.pgid != group).then_some((*entry, group))
            })
            .collect();
        out.sort_by_key(|(e, _)| e.pid);
        out
    }
}

/// The process table as it is now (`sys::all_pids` and `sys::stat`), without zombies.
pub(crate) fn snapshot() -> Vec<Entry> {
    sys::all_pids()
        .into_iter()
        .filter_map(|pid| {
            let stat = sys::stat(pid)?;
            (!stat.is_zombie()).then_some(Entry {
                pid,
                ppid: stat.ppid,
                pgid: stat.pgid,
                start_time: stat.start_time,
            })
        })
        .collect()
}

/// How often the process tree is snapshotted where the runner is no subreaper
/// (`Session::observe_lineage_if_due`): often enough to see most servers a test starts before the test
/// ends, seldom enough that a walk of every process stays a small share of the scheduler's time.
pub(crate) const SNAPSHOT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// The session's side: snapshots taken while units run, and what they say escaped.
impl super::Session {
    /// Takes snapshots of the process tree from now on (`observe_lineage`), to find what leaves a
    /// group where escapees are not re-parented to the runner.
    pub(crate) fn watch_lineage(&self) {
        *locked(&self.lineage) = Some((Default::default(), std::time::Instant::now()));
    }

    /// Whether snapshots of the process tree are taken (`watch_lineage`).
    pub(crate) fn watches_lineage(&self) -> bool {
        locked(&self.lineage).is_some()
    }

    /// One snapshot of the process tree, remembering what descends from the run's groups; nothing
    /// unless `watch_lineage` was called.
    pub(crate) fn observe_lineage(&self) {
        let mut lineage = locked(&self.lineage);
        let Some((lineage, next)) = lineage.as_mut() else {
            return;
        };
        let groups = self.lock().groups.clone();
        lineage.observe(&snapshot(), &groups);
        *next = std::time::Instant::now() + SNAPSHOT_EVERY;
    }

    /// `observe_lineage`, if `SNAPSHOT_EVERY` has passed since the last snapshot.
    pub(crate) fn observe_lineage_if_due(&self) {
        let due = locked(&self.lineage)
            .as_ref()
            .is_some_and(|(_, next)| std::time::Instant::now() >= *next);
        if due {
            self.observe_lineage();
        }
    }

    /// Processes that left a group of the run and were re-parented elsewhere (`lineage`), each with
    /// the group it came from.
    pub(super) fn lineage_escapees(&self) -> Vec<Escaped> {
        let mut lineage = locked(&self.lineage);
        let Some((lineage, _)) = lineage.as_mut() else {
            return Vec::new();
        };
        lineage
            .escaped(&snapshot())
            .into_iter()
            .filter(|(entry, _)| !self.is_known(entry.pid))
            .map(|(entry, group)| {
                super::orphans::described_from(entry.pid, entry.start_time, group)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(pid: i32, ppid: i32, pgid: i32, start_time: u64) -> Entry {
        Entry {
            pid,
            ppid,
            pgid,
            start_time,
        }
    }

    #[test]
    fn a_setsid_child_reparented_to_launchd_is_attributed_to_its_unit() {
        let units = BTreeSet::from([100, 300]);
        let mut lineage = Lineage::default();
        // Unit 100's test (pid 100) started a server that called setsid (its own group 200), and it
        // forked a worker; unit 300 runs alone; 50 is some other program of the user.
        lineage.observe(
            &[
                e(1, 0, 1, 0),
                e(50, 1, 50, 5),
                e(100, 9, 100, 10),
                e(200, 100, 200, 11),
                e(201, 200, 200, 12),
                e(300, 9, 300, 13),
            ],
            &units,
        );
        // The test exits: the server is re-parented to launchd, still in its own group.
        let later = [
            e(1, 0, 1, 0),
            e(50, 1, 50, 5),
            e(200, 1, 200, 11),
            e(201, 200, 200, 12),
            e(300, 9, 300, 13),
        ];
        let escaped = lineage.escaped(&later);
        assert_eq!(
            escaped,
            vec![(e(200, 1, 200, 11), 100), (e(201, 200, 200, 12), 100)]
        );
    }

    #[test]
    fn a_reused_pid_is_not_taken_for_the_process_that_had_it() {
        let units = BTreeSet::from([100]);
        let mut lineage = Lineage::default();
        lineage.observe(&[e(100, 9, 100, 10), e(200, 100, 200, 11)], &units);
        // 200 exited and the pid went to an unrelated process started later.
        assert!(lineage.escaped(&[e(200, 1, 200, 99)]).is_empty());
        // And it is forgotten: the same pid and start time seen later is not ours either.
        assert!(lineage.escaped(&[e(200, 1, 200, 11)]).is_empty());
    }

    #[test]
    fn a_parent_started_after_its_child_breaks_the_chain() {
        // Pid 100 is a unit's leader now, but 200's parent was an earlier process with pid 100.
        let units = BTreeSet::from([100]);
        let mut lineage = Lineage::default();
        lineage.observe(&[e(100, 9, 100, 50), e(200, 100, 200, 11)], &units);
        assert!(lineage.escaped(&[e(200, 1, 200, 11)]).is_empty());
    }

    #[test]
    fn members_still_in_their_group_are_not_escapees() {
        let units = BTreeSet::from([100]);
        let mut lineage = Lineage::default();
        lineage.observe(&[e(100, 9, 100, 10), e(101, 100, 100, 11)], &units);
        // Re-parented but still in the unit's group: the group kill gets it.
        assert!(lineage.escaped(&[e(101, 1, 100, 11)]).is_empty());
    }

    #[test]
    fn a_parent_loop_in_a_garbled_table_ends() {
        let units = BTreeSet::from([7]);
        let mut lineage = Lineage::default();
        lineage.observe(&[e(10, 11, 10, 1), e(11, 10, 11, 1)], &units);
        assert!(lineage.escaped(&[e(10, 11, 10, 1)]).is_empty());
    }

    #[test]
    fn descendants_seen_in_earlier_snapshots_keep_their_origin() {
        let units = BTreeSet::from([100]);
        let mut lineage = Lineage::default();
        lineage.observe(&[e(100, 9, 100, 10), e(200, 100, 200, 11)], &units);
        // The unit is over (its group no longer listed); the server forks a child of its own.
        lineage.observe(
            &[e(200, 1, 200, 11), e(210, 200, 210, 20)],
            &BTreeSet::new(),
        );
        let escaped = lineage.escaped(&[e(200, 1, 200, 11), e(210, 200, 210, 20)]);
        assert_eq!(escaped.len(), 2);
        assert!(escaped.iter().all(|(_, group)| *group == 100));
    }

    #[test]
    fn the_real_process_table_shows_a_setsid_grandchild_escaping() {
        use std::os::unix::process::CommandExt;
        use std::process::Command;
        // A shell in its own group starts a setsid sleeper, prints its pid, and waits for stdin.
        let mut shell = Command::new("sh")
            .args(["-c", "setsid sleep 30 & echo $!; read _"])
            .process_group(0)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let group = shell.id() as i32;
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(shell.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let sleeper: i32 = line.trim().parse().unwrap();
        // setsid may fork first: wait until the sleeper runs in a group of its own.
        let mut lineage = Lineage::default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let table = snapshot();
            lineage.observe(&table, &BTreeSet::from([group]));
            let setsid_done = table.iter().any(|e| e.pgid != group && e.ppid == group);
            if setsid_done || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::yield_now();
        }
        drop(shell.stdin.take());
        let _ = shell.wait();
        let escaped = lineage.escaped(&snapshot());
        let found: Vec<i32> = escaped.iter().map(|(e, _)| e.pid).collect();
        for (entry, _) in &escaped {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(entry.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(sleeper),
            nix::sys::signal::Signal::SIGKILL,
        );
        assert!(escaped.iter().all(|(_, g)| *g == group), "{escaped:?}");
        assert!(found.contains(&sleeper), "{sleeper} not in {found:?}");
    }
}
