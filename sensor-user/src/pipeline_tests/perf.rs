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
