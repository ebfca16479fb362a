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
    let d = feed(&mut engine, &[dropped]);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        d[0].novelty.clone().and_then(|n| n.what),
        Some(What::Executable("/tmp/<tmp>/payload".into()))
    );
    assert_eq!(d[0].severity(), Severity::High, "still in /tmp");
}

/// One run of `git init; git add; git commit` in a fixed checkout: git's object directories
/// (two hex digits), its `tmp_obj_XXXXXX` files and `.git/tXXXXXX` temporaries take new values
/// every run, and no generator table knows them.
fn git_run(run: u32) -> Vec<Attributed> {
    let w = job(&run.to_string());
    let time = at(u64::from(run) * 3600);
    let pid = 1000 * run + 7;
    let git = "/usr/bin/git";
    let e = |kind: EventKind| ev(&w, time, pid, git, "/bin/bash", kind);
    let mut events = vec![e(exec(git))];
    for object in 0..3 {
        let seed = run * 10 + object;
        let dir = format!("/w/.git/objects/{}", noise(seed, 2, HEX));
        events.push(e(open(&dir, false)));
        events.push(e(open(
            &format!("{dir}/tmp_obj_{}", noise(seed, 6, ALNUM)),
            true,
        )));
    }
    events.push(e(open(&format!("/w/.git/t{}", noise(run, 6, ALNUM)), true)));
    events.push(e(open("/w/.git/COMMIT_EDITMSG", true)));
    events
}

#[test]
fn git_names_are_learnt_as_shapes_and_fold_when_judged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    for run in 1..=5 {
        assert_eq!(feed(&mut engine, &git_run(run)), [], "learning run {run}");
    }
    // Five clean runs, each with its own random names: nothing to report.
    for run in 6..=10 {
        assert_eq!(feed(&mut engine, &git_run(run)), [], "judged run {run}");
    }
    engine.persist().expect("persist");
    let stored = crate::baseline::ops::load(dir.path(), JOB).expect("stored baseline");
    let mut shapes: Vec<String> = stored.shapes().into_iter().map(|(_, p)| p).collect();
    shapes.sort();
    assert_eq!(
        shapes,
        [
            "/w/.git/objects/{hex2}",
            "/w/.git/objects/{hex2}/tmp_obj_{alnum6}",
            "/w/.git/t{alnum6}",
        ]
    );
    // What a shape cannot tell stays novel: a new executable at a shaped path, a new name.
    let w = job("10");
    let payload = "/w/.git/objects/ab/tmp_obj_Zz9Yy8";
    let dropped = ev(&w, at(36_000), 10_008, payload, "/bin/bash", exec(payload));
    let d = feed(&mut engine, &[dropped]);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        d[0].novelty.clone().and_then(|n| n.what),
        Some(What::Executable(payload.into()))
    );
    let hook = open("/w/.git/hooks/pre-commit", true);
    let d = engine.observe(&ev(
        &w,
        at(36_000),
        10_009,
        "/usr/bin/git",
        "/bin/bash",
        hook,
    ));
    assert_eq!(d.len(), 1, "{d:?}");
}

const WGET_LOADING: [&str; 5] = [
    "/etc/ld.so.cache",
    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0",
    "/usr/lib/locale/C.utf8/LC_CTYPE",
    "/etc/wgetrc",
];

/// The one deviation of `d`: wget's new executable, with `loaded` as its loading evidence.
fn assert_new_wget(d: &[v1::Deviation], loaded: &[&str], total: u64) {
    assert_eq!(
        d[0].novelty.clone().and_then(|n| n.what),
        Some(What::Executable("/usr/bin/wget".into())),
        "{d:?}"
    );
    let evidence = d[0].loaded.clone().expect("loading evidence");
    assert_eq!(evidence.paths, loaded, "{d:?}");
    assert_eq!(evidence.total, total);
}

/// A new executable's loading (libraries, locale, `ld.so.cache`) is one novelty with it: its
/// deviation waits for them and names them as evidence, and they are learnt; what it does after
/// (or a credential read, or a write) is judged as usual, after it.
#[test]
fn a_new_executables_loading_is_part_of_its_novelty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    learn_runs(&mut engine, 1..6);
    let w = job("6");
    let t = at(6 * 3600);
    let later = t + Duration::from_secs(3);
    let curl = |time, kind| ev(&w, time, 6001, "/usr/bin/wget", "/bin/bash", kind);
    let mut events = vec![curl(t, exec("/usr/bin/wget"))];
    for lib in WGET_LOADING {
        events.push(curl(t, open(lib, false)));
    }
    // Twice the same library: learnt by the first read, so known at the second.
    events.push(curl(t, open(WGET_LOADING[1], false)));
    assert_eq!(feed_live(&mut engine, &events), [], "held for its evidence");
    // Reads in its first moments that are not loading: a credential, a write. The new
    // executable goes out first, with its loading as evidence.
    let d = feed_live(
        &mut engine,
        &[
            curl(t, open("/home/runner/.ssh/id_rsa", false)),
            curl(t, open("/home/runner/loot.txt", true)),
        ],
    );
    assert_eq!(d.len(), 3, "{d:?}");
    assert_new_wget(&d, &WGET_LOADING, 5);
    // After its first moments, a new read is its own deviation.
    let d = feed(&mut engine, &[curl(later, open("/etc/wget-extra", false))]);
    assert_eq!(d.len(), 1, "{d:?}");
    // The loading was learnt: in the next run only wget itself comes back (a novelty reported
    // and not accepted recurs once per run), its loading stays silent; its exit releases it.
    let w7 = job("7");
    let t7 = at(7 * 3600);
    let next: Vec<Attributed> = [
        exec("/usr/bin/wget"),
        open("/etc/ld.so.cache", false),
        open("/usr/lib/x86_64-linux-gnu/libssl.so.3", false),
        EventKind::Exit { exit_code: 0 },
    ]
    .into_iter()
    .map(|k| ev(&w7, t7, 7001, "/usr/bin/wget", "/bin/bash", k))
    .collect();
    let d = feed_live(&mut engine, &next);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        d[0].novelty.clone().and_then(|n| n.what),
        Some(What::Executable("/usr/bin/wget".into()))
    );
    assert_eq!(d[0].loaded, None, "nothing new in its loading: {d:?}");
    assert!(d[0].signals.iter().any(|s| s == "recurring:1"), "{d:?}");
}

/// A new tool that reads another process's environment in its first moments (procfs is where
/// libraries' loading reads go too) is memory scraping, not loading: reported HIGH on its own.
#[test]
fn another_process_environ_is_never_loading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    learn_runs(&mut engine, 1..6);
    let w = job("6");
    let t = at(6 * 3600);
    let cat = |kind| ev(&w, t, 6002, "/usr/bin/tac", "/bin/bash", kind);
    let d = feed(
        &mut engine,
        &[
            cat(exec("/usr/bin/tac")),
            cat(open("/etc/ld.so.cache", false)),
            cat(open("/proc/4242/environ", false)),
        ],
    );
    let environ = d
        .iter()
        .find(|d| {
            matches!(d.novelty.clone().and_then(|n| n.what),
                Some(What::File(f)) if f.path == "/proc/<pid>/environ")
        })
        .unwrap_or_else(|| panic!("no deviation for the environ read: {d:?}"));
    assert_eq!(environ.severity(), v1::Severity::High, "{environ:?}");
}

/// A new executable that loads and then stays quiet cannot keep its deviation back: the
/// agent's clock releases it once the hold is over, and so does any later event of its run.
#[test]
fn a_quiet_new_executable_is_released_by_the_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    learn_runs(&mut engine, 1..6);
    let w = job("6");
    let t = at(6 * 3600);
    let wget = |kind| ev(&w, t, 6001, "/usr/bin/wget", "/bin/bash", kind);
    let mut events = vec![wget(exec("/usr/bin/wget"))];
    events.extend(WGET_LOADING.map(|lib| wget(open(lib, false))));
    assert_eq!(feed_live(&mut engine, &events), []);
    let hold = Duration::from_nanos(detect::HOLD_NANOS as u64);
    let flush = |engine: &mut Engine, now| {
        let found = engine.detect.flush_loading(Some(now));
        engine.report.report(found, false)
    };
    assert_eq!(flush(&mut engine, t + hold / 2), [], "still loading");
    let d = flush(&mut engine, t + hold);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_new_wget(&d, &WGET_LOADING, 5);
    assert_eq!(flush(&mut engine, t + hold * 3), [], "sent once");

    // In run 7, another process's event past the hold releases it.
    let w7 = job("7");
    let t7 = at(7 * 3600);
    let d = feed_live(
        &mut engine,
        &[
            ev(
                &w7,
                t7,
                7001,
                "/usr/bin/wget",
                "/bin/bash",
                exec("/usr/bin/wget"),
            ),
            ev(
                &w7,
                t7,
                7001,
                "/usr/bin/wget",
                "/bin/bash",
                open("/etc/wget7rc", false),
            ),
            ev(
                &w7,
                t7 + hold,
                7002,
                "/usr/bin/make",
                "/bin/bash",
                open("/etc/hosts", false),
            ),
        ],
    );
    assert!(!d.is_empty(), "{d:?}");
    assert_new_wget(&d, &["/etc/wget7rc"], 1);
}

/// npm names its debug log by the time it started (`_logs/2026-12-07T03_11_55_964Z-debug-0.log`,
/// as observed in `cargo xtask detect --noise`'s node-npm job): every run writes a new name, one
/// value of which already says it is a time.
#[test]
fn npm_debug_logs_named_by_time_are_one_behaviour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    let log = |run: u32| {
        format!(
            "/home/runner/.npm/_logs/2026-12-07T03_{:02}_{:02}_{:03}Z-debug-0.log",
            run * 7 % 60,
            run * 13 % 60,
            run * 101 % 1000
        )
    };
    for run in 1..7 {
        let w = job(&run.to_string());
        let time = at(u64::from(run) * 3600);
        let mut events = normal_run(&w, time, 1000 * run);
        events.push(ev(
            &w,
            time,
            1000 * run + 50,
            "/usr/bin/node",
            "/bin/bash",
            open(&log(run), true),
        ));
        assert_eq!(feed(&mut engine, &events), [], "run {run}");
    }
}

/// pip installs each package's `RECORD` and `INSTALLER` through a Python temporary file beside
/// them, and Python probes `/tmp` with a bare 8-character name when it first needs a temporary
/// directory (observed names from `cargo xtask detect --noise`'s python-pip job): new names
/// every run, the same behaviours.
#[test]
fn python_temporary_names_are_one_behaviour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path());
    let observed = [
        ("pkptrfkx", "yci6mp1s", "_9f_obth"),
        ("weu__yud", "1yux68ir", "mdy7v_ay"),
        ("boavzec5", "_nwci10a", "_ml1zsv4"),
        ("3t9c_jdt", "8jom388v", "_kdbwacd"),
        ("w_zjjc_3", "vkmaunbo", "565l_mll"),
        ("25_guh43", "dzo8_6nz", "_slyd02e"),
    ];
    let info = "/w/venv/lib/python3.11/site-packages/pip-23.0.1.dist-info";
    for (run, (record, installer, probe)) in (1..).zip(observed) {
        let w = job(&run.to_string());
        let time = at(u64::from(run) * 3600);
        let mut events = normal_run(&w, time, 1000 * run);
        let python = |kind| {
            ev(
                &w,
                time,
                1000 * run + 50,
                "/usr/bin/python3.11",
                "/bin/bash",
                kind,
            )
        };
        for path in [
            format!("{info}/RECORD{record}.tmp"),
            format!("{info}/INSTALLER{installer}.tmp"),
            format!("/tmp/{probe}"),
        ] {
            events.push(python(open(&path, true)));
            events.push(python(EventKind::FileOp(FileOperation::Chmod {
                path,
                mode: 0o644,
            })));
        }
        assert_eq!(feed(&mut engine, &events), [], "run {run}");
    }
}
