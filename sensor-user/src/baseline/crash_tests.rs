//! Crash safety of baseline files, with real processes: a child process keeps learning and
//! saving (as the agent's persist does), is killed with SIGKILL at random moments, and every time
//! the files must load and hold everything the child had saved before it died.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::learned::WorkloadBaseline;
use super::{store, version};
use crate::behaviour::Behaviour;

const CHILD_ENV: &str = "SENSOR_BASELINE_CRASH_DIR";
const WORKLOADS: [&str; 3] = [
    "github:a/b/ci/one",
    "github:a/b/ci/two",
    "unit:three.service",
];

fn exe(i: u64) -> Behaviour {
    Behaviour::Executable(format!("/opt/tool/bin/step-{i}"))
}

/// The child: continues from what is on disk, then learns one behaviour per workload and saves,
/// printing the step number once every save of that step has returned.
#[test]
#[ignore = "run by crash_during_writes_loses_nothing_saved as a child process"]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let mut baselines: Vec<WorkloadBaseline> = WORKLOADS
        .iter()
        .map(|w| {
            store::read_file(&dir.join(store::file_name(w)))
                .map(|f| f.baseline)
                .unwrap_or_default()
        })
        .collect();
    // A kill between two workloads' saves leaves the later ones a step behind: resume from the
    // least advanced (re-learning a known step changes nothing in the others).
    let mut step = baselines
        .iter()
        .map(|b| b.learned.len() as u64)
        .min()
        .unwrap_or(0);
    let mut out = std::io::stdout().lock();
    loop {
        for (w, b) in WORKLOADS.iter().zip(&mut baselines) {
            b.learned.learn(exe(step), usize::MAX);
            // Some bulk, so that writes take a moment and kills land inside them.
            b.learning_runs = (0..50).map(|r| format!("run-{r}-{step}")).collect();
            store::save_versioned(dir, &store::file_name(w), w, b, "learned").expect("save");
        }
        writeln!(out, "{step}").expect("stdout");
        out.flush().expect("flush");
        step += 1;
    }
}

#[test]
fn crash_during_writes_loses_nothing_saved() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("baselines");
    std::fs::create_dir_all(&dir).unwrap();
    let me = std::env::current_exe().unwrap();
    let mut saved: Option<u64> = None;
    let mut rounds = 0;
    for round in 0..12u64 {
        let mut child = Command::new(&me)
            .args([
                "--exact",
                "baseline::crash_tests::crash_child_writer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(step) = line.trim().parse::<u64>() {
                    let _ = tx.send(step);
                }
            }
        });
        // Let it make progress past what it had, then kill it at a pseudo-random moment.
        let start = Instant::now();
        let target = saved.map_or(0, |s| s + 5);
        let mut last = saved;
        while last.is_none_or(|l| l < target) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the writer makes no progress"
            );
            if let Ok(step) = rx.recv_timeout(Duration::from_millis(100)) {
                last = Some(step);
            }
        }
        std::thread::sleep(Duration::from_micros(137 * (round * 7 % 11) + 50));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        last = rx.try_iter().last().or(last);
        saved = last;
        rounds += 1;

        // Everything acknowledged before the kill is on disk, and every file loads.
        let loaded = store::load_all(&dir).expect("baselines load after SIGKILL");
        assert_eq!(loaded.len(), WORKLOADS.len());
        let saved = saved.unwrap();
        for w in WORKLOADS {
            let (name, b) = &loaded[w];
            for i in 0..=saved {
                assert!(
                    b.learned.contains(&exe(i)),
                    "round {round}: step {i} of {w} lost (saved up to {saved})"
                );
            }
            let file = store::read_file(&dir.join(name)).unwrap();
            // One version per save that changed something: the acknowledged ones, perhaps
            // one more that completed before the kill.
            let learnt = b.learned.len() as u64;
            assert_eq!(file.baseline_version, learnt, "{w}");
            assert!(learnt == saved + 1 || learnt == saved + 2, "{w}: {learnt}");
            // The change log still rebuilds the previous version.
            let log = version::read(&dir, name, file.baseline_version);
            let previous = version::at_version(
                b.learned.behaviours(),
                file.baseline_version,
                file.baseline_version - 1,
                &log,
            )
            .expect("previous version");
            assert_eq!(previous.len() as u64, learnt - 1);
        }
    }
    assert_eq!(rounds, 12);
}
