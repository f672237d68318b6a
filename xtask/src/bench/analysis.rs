//! What the measurements mean and what was tried: the prose `BENCHMARKS.md` carries under its table.

/// What the measurements mean and what was tried, kept with the numbers.
pub(super) const ANALYSIS: &str = "
## Where the time goes

- **Shared mode.** cargo-cleantest reads the config of the root the manifests name, then builds while
  the workspace is read and the session starts (record, reaper, proxy, lock). The workspace is the last
  run's `cargo metadata` answer while nothing it was made from changed (the cargo executable, every
  manifest's text, the README files beside the members), so an unchanged workspace starts two cargo
  processes, not three: `cargo cleantest` itself and the build (`cargo test --doc` is a third when the
  doctests run). The engine is asked its version and `/info` once each, together: dockerd runs
  `runc --version` for each, on the same two cores as the build. No `cargo -vV` is run unless a
  target runner is configured. `cargo test --doc` starts first so it overlaps with the test binaries.
  A unit's end looks for what its process group left by probing the pids created after its leader
  when they are few, else by listing `/proc` (a libtest binary starts a thread per test, and every
  thread takes a pid: probing them one by one cost the 1,000-test run 2,000 failed lookups); the
  runner's own subtree is no longer walked as well.
- **Start-up with zero tests** is that same fixed cost, paid once per run, and on this 2-core machine
  it is CPU, not waiting. Its floor is cargo's own: `cargo cleantest --version` (cargo starting an
  external command: it loads its config, libgit2 and the system's CA bundle first) took 15.8 ms and
  `cargo test --no-run` on the fresh workspace 16.8 ms, against 21.0 ms for the whole of
  `cargo test --tests`: 1.55x before the runner does anything, and 1.9x on runs where cargo's start
  was slower. The 1.5x target for `--tests` is below that floor; what the runner adds over it (about
  15 ms: listing, the session's end and sweep, the engine's answers competing with the build for the
  CPU) is what the ratio measures. Side by side, before and after this round (the previous commit's
  release build against this one's):

  | case | `cargo test` | before | after |
  | --- | --- | --- | --- |
  | zero tests, no doctests (`--tests`) | 21.4 ms | 57.5 ms (2.69x) | 49.4 ms (2.31x) |
  | zero tests, with doctests | 58.8 ms | 124.6 ms (2.12x) | 113.9 ms (1.94x) |
  | zero tests, no engine | 55.6 ms | 96.8 ms (1.74x) | 98.6 ms (1.77x) |
  | 1,000 trivial tests, shared | 124.6 ms | 165.8 ms (1.33x) | 158.7 ms (1.27x) |

  (Medians of 40 rounds, 30 for the last row, each round running the three sides one after the
  other, so that the machine's load falls on all three alike.) Without an engine, nothing changed:
  there the build was already the longest part, and `cargo metadata` ran beside it.
- **Temporary directories** (one per unit, `TMPDIR`): a unit's directory that it left empty is handed
  to the next unit instead of being removed and made again (on ext4 a `mkdir` and an `rmdir` cost about
  150 µs together, 0.4–0.9 s over 1,000 isolated tests when each unit got a new one). With the reuse,
  1,000 isolated tests took 2.46 s with them and 2.59 s with `--no-tmpdir` in one side-by-side run: no
  cost above the noise.
- **Sweep.** On this 2-core machine the engine is the limit. Container removals run 8 at a time (a
  scan of the sweep of 100 containers: 6.1–6.7 s at 4 in flight, 5.2–5.6 s at 8, 5.1–5.4 s at 12,
  5.4–5.6 s at 16, 6.1–6.6 s at 24). dockerd removes networks one at a time, about 0.2 s each and
  mostly idle (parallel requests take as long), so the CLI pays about 2 s for its 10 networks after
  its containers are gone. The sweep removes each network as soon as the last of its containers is
  gone, while other containers are still being removed; containers are taken network by network, so
  only the last network's removal shows. At most 2 removals are in flight on one network: concurrent
  endpoint deletions on one network can leave dockerd 20.10's per-network endpoint count too high
  (moby/moby#43286), and such a network cannot be removed until the daemon restarts. With all 8
  removals on one network, 2 of 33 sweeps of this benchmark's resources left such a network; with at
  most 2 per network, none of 40. A network refused that way is reported after 2 s, with what to do,
  instead of holding the sweep for its 60 s bound.
- **Peak RSS.** The runner peaks at about 7 MiB with 1,000 isolated tests, nextest at about 15.5 MiB.
  Both are measured after cargo has exec'd them: cargo's own start-up peaks at about 15 MiB, and an
  earlier version of this harness, which sampled from the start, compared that on both sides (0.98x).
- **Proxy.** Measured with curl on this machine: the proxy adds about 60 µs to a request on an open
  connection and about 0.4 ms to a new connection (the caller's unit is read from /proc, and an
  upstream connection is opened). A `docker create` from the CLI is one connection with two requests,
  about 28 ms in all, so the proxy costs under 2%; the median of 50 creates moves by a few percent
  between runs, which is why the ratio lands either side of 1. Each side starts on an engine
  without the other side's containers, and the sides take turns going first.
- **Interrupt and crash** are dominated by the engine removing the containers; the processes are gone
  within milliseconds of the signal.
- **PID namespace killed.** `cargo cleantest` runs as PID 1 of a PID namespace of its own (`unshare
  --fork --pid`), as a container's entrypoint or a CI job in a container does. Killing it kills every
  process of the run, the host reaper included; the engine-side reaper container, whose attached stream
  then breaks, sweeps the session and removes itself. The time is until no container of the session is
  left, the reaper's own included.
- **Isolated mode, again.** The runner used to find a unit's leftover processes by reading every
  process's `/proc/PID/stat`, once per unit: with the unit's leader kept as a zombie (so that its group
  id cannot be reused), the cheap check that the group is empty always failed. A profile of 1,000
  isolated tests showed a third of the runner's CPU there, and isolated runs here took 2.9 s. Leftovers
  are now looked for among the processes created after the unit's leader (all of them once pids have
  wrapped) and in the runner's own subtree (the runner is a subreaper: whatever the leader left is
  re-parented into it), and the same run took about 1.5 s. A later profile still showed the listing of
  /proc (`getdents64`, 18% of the runner's CPU) and the reading of each listed process's `stat` (10%),
  twice per unit (when the leader exits, and when the unit is finished). Now the pids created after the
  leader (`leader+1..=ns_last_pid`, a few dozen here) are looked up one by one, /proc is listed only
  when that range is long or pids have wrapped, a thread's id (which /proc also answers for) is not
  taken for a process, and a group is looked into once after its leader exits: 1.03 s against the
  previous version's 1.30 s on the same machine, side by side (hyperfine, 8 runs each).
- **CI at scale (issue 15)** adds a sampler thread per session with an engine (a list of the session's
  containers each second, and one-shot stats for the running ones, four at a time) and nothing to the
  end of a run: the peak count there comes from what the sweep lists anyway. Side by side on this
  machine with the build before it: shared mode 121 ms against 123 ms, isolated mode the same within
  noise. This machine's `cargo nextest run` is faster than the one that measured the earlier tables
  (2.0–2.1 s against 2.5–2.8 s), which is what moved the isolated ratio.
- **Services.** 40 tests in 4 binaries, each connecting to postgres with the host's `psql` to create a
  table, insert and select, on `cleantest-postgres:15`. Its image carries a data directory initialised
  when it was built, so a container is ready in about 0.5 s (`initdb` at start took 5–6 s on this
  machine's fuse-overlayfs storage). (a) starts, waits for and removes 40 containers; (b) starts 4, one
  per binary, two binaries at a time, and leaves them to the sweep; (c) starts one while the session
  starts, on a network of its own; (c′) starts the same one from test code, through the control socket,
  when the first test asks. With a warm build, (c) pays one network (about 0.25 s), one container start
  and its readiness checks before any test can run, where (b)'s first binaries start theirs in parallel
  with each other: the two are within a second of each other, and the ratio (c)/(b) is set by that
  fixed cost, not by the 40 tests. What (c) is for shows on a cold build: the service starts while cargo
  builds, and the first test starts 0.03 s after the build's end; nothing of its start-up is left on
  the wall time, and one container serves every binary instead of one per binary.
- **Services under plain `cargo test` (issue 28).** The same 40 tests under plain `cargo test`, the
  crate starting a session host (`cargo-cleantest __host`, first on PATH) on the first call: one
  postgres for the whole invocation, code-declared or the config's `[services.db]` on demand. It is as
  fast as under `cargo cleantest` (no listing, no doctest pass). The time is until cargo exits; the
  host's sweep after that is checked (0 containers within 10 s), not timed.
- **Per-test databases (issue 36).** Each test inserts a row and reads the schema (60 tables with an
  index and 200 rows each) through the host's psql, on `cleantest-postgres:15` with its data on a tmpfs
  and fsync off. Sharing means the tests of one binary share its process's database; sqlx::test's way
  means each test creates a database and runs both migration files in it, then drops it. What is left
  of the gap against sharing: each test's database is cloned and dropped by the server (a file copy of
  the template and a removal: about 24 ms and 10–20 ms of the server's time on this machine), and a
  test's first connection to a fresh database builds its catalog caches. On 2 cores that work competes
  with the tests themselves; it does not depend on how the pool hands databases out, which takes 1–2 ms
  at the test.
- **This machine, and the layers as crates (issue 37).** `cargo test` itself is faster on this VM
  today than on 2026-12-04 (0.092 s against 0.119 s on the trivial workspace), which moves the
  shared-mode ratio. The crates split (sys, docker, the protocol), the staged run and the one output
  module left every ratio within the earlier runs' ranges or better: shared mode 1.51x (1.79x then),
  `--isolate` 0.58x (0.54x), peak RSS 12.5 MiB against 11.9 MiB, the database rows 1.30x/0.42x at 40
  tests and 1.41x/0.23x at 200 (1.34x/0.42x and 1.58x/0.25x at 637fa4b).
- **No engine (issue 38).** `DOCKER_HOST` naming a socket that is not there, on the zero-test
  workspace. Before, the run paid about 3.1 s (measured with the debug build, 3.13–3.28 s): the end
  retried the engine that was down at the start for 3 s (200 ms doubling) before it said there was
  nothing to sweep. Now a missing unix socket is known at once, and an engine nothing of the run reached
  is not waited for. What is left over `cargo test` is the run's ordinary start-up (the row above it,
  with an engine, is slower still): cargo started twice more (the build, then `cargo test --doc`), the
  listing, and the session's start and end.
- **Shards by time (issue 40).** The suite has three 4 s tests, five of 1 s and 32 of 50 ms in one
  binary; each shard's test time is the sum of its JUnit cases, so the number does not depend on how
  many threads ran them. `weighted:K/3`, balanced by the JUnit of a first run, gives each shard 6.2 s.
  Hash gives 9.55 s, 5.45 s and 3.6 s, because two of the three long tests hash to one shard. Three
  long tests land in three different hash shards in only 2 of 9 placements; with `t000`–`t002` long,
  hash happens to balance this suite (1.06x), and the rows would show nothing.
- **Archives (issue 40).** On the 1,000-test workspace (11 debug binaries, about 77 MB), `cargo cleantest
  archive` took 1.23 s and wrote 30 MB, against 0.31 s and 20 MB for `cargo nextest archive`. The
  difference is the compressor: ours is ruzstd, pure Rust, because the C zstd does not compile in the
  macOS check (its build needs a libc's headers, which the check's cross clang lacks); ruzstd's
  fastest level is its only one, on one thread. Both rows miss their targets (1.5x, 1.2x). Splitting
  the tar into frames compressed on each core would narrow the time. What the archive is for holds: a
  shard that starts from it (unpacked each time, into the session's directory) took 0.29 s where the
  same shard on a machine that builds took 1.47 s, on a workspace with no dependencies; every
  dependency of a real workspace widens that.
";
