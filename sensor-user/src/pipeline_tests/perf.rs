//! Cost of judging one event (ignored by default; run in release for numbers):
//! `cargo test --release -p sensor-user --lib engine_throughput -- --ignored --nocapture`.

use std::time::Instant;

use super::*;

#[test]
#[ignore = "a measurement, not a check; run in release"]
fn engine_throughput() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    learn_runs(&mut engine, 1..6);
    let w = job("6");
    // A judged run of known behaviour: mostly opens, some execs, connects and exits.
    let events: Vec<Attributed> = (0..200_000u32)
        .map(|i| {
            let pid = 6000 + i % 50;
            let time = at(6 * 3600 + u64::from(i / 20_000));
            match i % 10 {
                0 => ev(
                    &w,
                    time,
                    pid,
                    "/usr/bin/curl",
                    "/bin/bash",
                    exec("/usr/bin/curl"),
                ),
                1 => ev(
                    &w,
                    time,
                    pid,
                    "/usr/bin/curl",
                    "/bin/bash",
                    connect("140.82.112.3", 443, ConnectResult::InProgress),
                ),
                2 => ev(
                    &w,
                    time,
                    pid,
                    "/usr/bin/curl",
                    "/bin/bash",
                    EventKind::Exit { exit_code: 0 },
                ),
                _ => ev(
                    &w,
                    time,
                    pid,
                    "/usr/bin/curl",
                    "/bin/bash",
                    open("/etc/hosts", false),
                ),
            }
        })
        .collect();
    let start = Instant::now();
    let mut found = 0;
    for e in &events {
        found += engine.observe(e).len();
    }
    let elapsed = start.elapsed();
    println!(
        "{} events in {elapsed:?}: {:.0} events/s, {found} deviations",
        events.len(),
        events.len() as f64 / elapsed.as_secs_f64()
    );
}

/// The agent's whole work per kernel record — decode, attribute, judge — in CPU time of the
/// measuring thread (time it waits for a core does not count, as it does in the end-to-end
/// `sensor run` measurement; a busy neighbour on the same core still slows it), on fresh state
/// each round, as a freshly started agent learning, the process known: the median of 7 rounds
/// of 200,000 records, per shape. Ignored: a measurement; run
/// in release with
/// `cargo test --release -p sensor-user --lib pipeline_cost_per_record -- --ignored --nocapture`
/// (`PIPELINE_SHAPE=repeated` or `=build` for one shape).
#[test]
#[ignore = "a measurement, not a check; run in release"]
fn pipeline_cost_per_record() {
    use crate::attribute::Attributor;
    use crate::kernel::decode::records;
    use crate::kernel::{BootClock, decode};

    let dir = tempfile::tempdir().expect("tempdir");
    let (cgroups, cgroup_id) = unit_cgroup(dir.path());
    // The compiler at the end of the chain `seed_build_chain` starts.
    let ids = (104, 103, cgroup_id);
    const RECORDS: usize = 200_000;
    // `loadgen open-rate`'s shape: one file opened again and again (what reaches the agent
    // with `--no-kernel-filter`).
    let repeat: Vec<Vec<u8>> = (0..RECORDS)
        .map(|_| records::open(&["f", ".tmpAbC123", "tmp", "/"], 0, ids))
        .collect();
    // A build's shape: distinct headers deep in a tree (what the kernel filter lets through).
    let names: Vec<String> = (0..4096).map(|i| format!("h{i}.h")).collect();
    let build: Vec<Vec<u8>> = (0..RECORDS)
        .map(|i| {
            let dir = format!("d{}", i % 64);
            let name = &names[i % names.len()];
            let path = [
                name.as_str(),
                &dir,
                "src",
                "app",
                "work",
                "runner",
                "home",
                "/",
            ];
            records::open(&path, 0, ids)
        })
        .collect();
    let clock = BootClock::at(at(0));
    // `PIPELINE_SHAPE=repeated` (or `build`) measures one shape alone, e.g. under a profiler.
    let only = std::env::var("PIPELINE_SHAPE").unwrap_or_default();
    let shapes = [
        ("one file repeated", &repeat),
        ("a build's headers", &build),
    ];
    for (shape, records) in shapes
        .into_iter()
        .filter(|(s, _)| s.contains(only.as_str()))
    {
        let mut rounds: Vec<f64> = (0..7)
            .map(|round| {
                let state = dir.path().join(format!("state-{shape}-{round}"));
                let mut attributor = Attributor::new(&cgroups);
                seed_build_chain(&mut attributor, cgroup_id);
                let mut engine = engine(&state);
                let started = thread_cpu();
                let mut found = 0;
                for record in records.iter() {
                    let event = decode(record, &clock).expect("decodes");
                    found += engine.observe(&attributor.attribute(event)).len();
                }
                std::hint::black_box(found);
                (thread_cpu() - started).as_secs_f64() * 1e9 / records.len() as f64
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        println!(
            "pipeline, {shape}: {:.0} ns of CPU per record (median of 7; {:.0}-{:.0}) = {:.3} core per 100k records/s",
            rounds[3],
            rounds[0],
            rounds[6],
            rounds[3] * 1e-4
        );
    }
}

/// A unit's cgroup (`system.slice/app.service`) under a cgroup root made in `dir`: the root,
/// and the cgroup's id.
fn unit_cgroup(dir: &Path) -> (std::path::PathBuf, u64) {
    use std::os::unix::fs::MetadataExt;

    let cgroups = dir.join("cgroup");
    let unit_dir = cgroups.join("system.slice/app.service");
    std::fs::create_dir_all(&unit_dir).expect("mkdir");
    let cgroup_id = std::fs::metadata(&unit_dir).expect("stat").ino();
    (cgroups, cgroup_id)
}

/// init → runner → bash → make → cc (pids 100 to 104), each exec'd with a few arguments in
/// cgroup `cgroup_id`: the process table of a build.
fn seed_build_chain(attributor: &mut crate::attribute::Attributor, cgroup_id: u64) {
    let chain = [
        "/sbin/init",
        "/usr/bin/runner",
        "/bin/bash",
        "/usr/bin/make",
        "/usr/bin/cc",
    ];
    for (i, exe) in chain.iter().enumerate() {
        let pid = 100 + i as u32;
        let mut kind = exec(exe);
        if let EventKind::Exec { argv, .. } = &mut kind {
            argv.extend(["-O2", "-c", "src/some/file.c", "-o", "build/file.o"].map(String::from));
        }
        attributor.attribute(chain_event(pid, cgroup_id, at(0), kind));
    }
}

/// An event of `pid` (child of `pid - 1`) in cgroup `cgroup_id`.
fn chain_event(pid: u32, cgroup_id: u64, time: SystemTime, kind: EventKind) -> Event {
    Event {
        time,
        pid,
        tid: pid,
        ppid: pid.saturating_sub(1),
        uid: 1000,
        euid: 1000,
        cgroup_id,
        kind,
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> std::time::Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_THREAD_CPUTIME_ID exists on every Linux.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } == 0;
    assert!(ok, "clock_gettime");
    std::time::Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}
