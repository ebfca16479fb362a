//! Build noise is not novelty: runs that differ only in temporary names, hashes, UUIDs and pids
//! learn and are judged as the same behaviours.

use super::*;
use crate::event::FileOperation;

/// `len` characters of `alphabet`, the same for the same `seed` (a different "random" name
/// per run, deterministically).
fn noise(seed: u32, len: usize, alphabet: &[u8]) -> String {
    let mut state = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            alphabet[(state % alphabet.len() as u64) as usize] as char
        })
        .collect()
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &[u8] = b"0123456789abcdef";
const PYTHON: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";

/// One CI run of a Rust and C build with the run's own temporary names, hashes and pids.
fn build_run(run: u32) -> Vec<Attributed> {
    let w = job(&run.to_string());
    let time = at(u64::from(run) * 3600);
    let pid = 1000 * run + 7;
    let uuid = format!(
        "{}-{}-4{}-a{}-{}",
        noise(run, 8, HEX),
        noise(run + 1, 4, HEX),
        noise(run + 2, 3, HEX),
        noise(run + 3, 3, HEX),
        noise(run + 4, 12, HEX)
    );
    let script = format!("/home/runner/work/_temp/{uuid}.sh");
    let build_script = format!(
        "/home/runner/work/app/app/target/debug/build/foo-{}/build-script-build",
        noise(run, 16, HEX)
    );
    let go = format!("/tmp/go-build{}/b001/exe/main", 100_000_000 + run * 7919);
    let e = |exe: &str, kind: EventKind| ev(&w, time, pid, exe, "/bin/bash", kind);
    let files = [
        format!("/tmp/tmp.{}/env", noise(run, 10, ALNUM)),
        format!("/tmp/.tmp{}", noise(run, 6, ALNUM)),
        format!("/tmp/cc{}.s", noise(run, 6, ALNUM)),
        format!("/tmp/tmp{}.json", noise(run, 8, PYTHON)),
        format!("/tmp/pip-build-env-{}/overlay/lib", noise(run, 8, PYTHON)),
        format!(
            "/home/runner/work/app/app/target/debug/deps/libfoo-{}.rlib",
            noise(run + 9, 16, HEX)
        ),
        format!(
            "/home/runner/work/app/app/target/debug/.fingerprint/foo-{}/lib-foo",
            noise(run + 5, 16, HEX)
        ),
        format!("/proc/{pid}/status"),
        format!(
            "/var/log/ci/build-{}.log",
            1_700_000_000 + u64::from(run) * 3600
        ),
    ];
    let mut events = vec![
        e("/bin/bash", exec(&script)),
        e(&script, exec(&build_script)),
        e(&script, exec(&go)),
    ];
    events.extend(files.iter().map(|f| e(&build_script, open(f, true))));
    let tmp = noise(run, 6, ALNUM);
    events.push(e(
        &build_script,
        EventKind::FileOp(FileOperation::Chmod {
            path: format!("/tmp/.tmp{tmp}/tool"),
            mode: 0o4755,
        }),
    ));
    events.push(e(
        &build_script,
        EventKind::FileOp(FileOperation::Symlink {
            target: format!("/tmp/.tmp{tmp}/tool"),
            link: format!("/tmp/cc{}.o", noise(run + 3, 6, ALNUM)),
        }),
    ));
    events
}

#[test]
fn runs_differing_in_generated_names_learn_the_same_behaviours() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LearningConfig {
        learning_runs: 2,
        ..LearningConfig::default()
    };
    let mut engine = Engine::open(dir.path(), config, HOST.into()).expect("open engine");
    // The runs really differ before generalisation.
    assert_ne!(build_run(1)[0], build_run(2)[0]);

    assert_eq!(feed(&mut engine, &build_run(1)), []);
    let after_one = only(engine.summary());
    assert_eq!(feed(&mut engine, &build_run(2)), []);
    let after_two = only(engine.summary());
    assert_eq!(
        (
            after_two.executables,
            after_two.exec_edges,
            after_two.file_accesses,
            after_two.other
        ),
        (
            after_one.executables,
            after_one.exec_edges,
            after_one.file_accesses,
            after_one.other
        ),
        "the second run learnt nothing new"
    );
    assert_eq!((after_two.executables, after_two.file_accesses), (3, 9));

    // A third run of the same shape, with its own names, is judged and silent.
    assert_eq!(feed(&mut engine, &build_run(3)), []);
    assert_eq!(feed(&mut engine, &build_run(4)), []);
    assert_eq!(only(engine.summary()).status, LearningStatus::Detecting);

    // Real novelty still shows, generalised, and a credential stays a credential.
    let w = job("4");
    let novel = ev(
        &w,
        at(4 * 3600),
        4007,
        "/usr/bin/cat",
        "/bin/bash",
        open("/home/runner/.ssh/id_ed25519", false),
    );
    let d = engine.observe(&novel);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].severity(), Severity::High);
    assert_eq!(d[0].signals, ["credential", "stable-dimension"]);
    let dropped = ev(
        &w,
        at(4 * 3600),
        4008,
        "/tmp/tmp.Zz9Yy8Xx7W/payload",
        "/bin/bash",
        exec("/tmp/tmp.Zz9Yy8Xx7W/payload"),
    );
    let d = engine.observe(&dropped);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        d[0].novelty.clone().and_then(|n| n.what),
        Some(What::Executable("/tmp/<tmp>/payload".into()))
    );
    assert_eq!(d[0].severity(), Severity::High, "still in /tmp");
}
