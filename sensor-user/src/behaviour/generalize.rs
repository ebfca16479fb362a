//! Path generalisation: the parts of a path that change from one identical run to the next
//! (pids, generated temporary names, content hashes, ids, timestamps) become placeholders, so two
//! identical CI runs learn, and are judged by, identical behaviours.
//!
//! | placeholder | replaces                                                                     |
//! |-------------|------------------------------------------------------------------------------|
//! | `<pid>`     | the pid in `/proc/<digits>`                                                  |
//! | `<tid>`     | the thread id in `/proc/<pid>/task/<digits>`                                 |
//! | `<tmp>`     | the random part of a generated temporary name (table [`TEMP_NAMES`], pip)    |
//! | `<uuid>`    | a UUID (`8-4-4-4-12` hex digits) inside a component                          |
//! | `<time>`    | an ISO 8601 date and time inside a component, `:` written as `_` or `-` too  |
//! |             | (npm's `_logs/2026-12-07T03_11_55_964Z-debug-0.log`)                         |
//! | `<hash>`    | a run of 8 or more hex digits (with at least one letter) inside a component  |
//! | `<n>`       | a number of 4 or more digits standing alone inside a component, or of 6 or   |
//! |             | more digits glued to letters (`go-build3891284731`)                          |
//!
//! A "run" is a maximal sequence of ASCII letters and digits; placeholders never swallow `/` or
//! the punctuation around a run, so directory structure and names such as `.ssh`,
//! `.aws/credentials` or `.docker/config.json` survive (the severity rules look for them).
//! Ordinary names stay: `python3.11`, `libssl.so.3`, `x86_64`, `id_ed25519` (5 glued digits),
//! `ISO8859-1`. An all-digit hash reads as a number (`<n>`); this is as rare as a content hash
//! without a letter.
//!
//! Temporary names are recognised by their generator's shape. Some shapes are distinctive enough
//! to match anywhere (`tmp.XXXXXXXXXX`, `.tmpXXXXXX`, rustc's `rmetaXXXXXX`); the others only in
//! a temporary directory: below `/tmp`, `/var/tmp`, `/dev/shm` or a runner's `_temp` directory.
//! Cargo's incremental session directories (`incremental/<crate>/s-…`) are `s-<tmp>`.
//! Generalisation is idempotent: a generalised path generalises to itself.

/// Directories whose contents are per-run scratch space.
const TEMP_DIRS: &[&str] = &["/tmp", "/var/tmp", "/dev/shm"];
/// A directory component that makes everything below it scratch space (GitHub's `RUNNER_TEMP`).
const TEMP_COMPONENT: &str = "_temp";

/// One generator of temporary names: `prefix`, then `random` characters of `alphabet`, then
/// nothing or a character outside the alphabet.
struct TempName {
    prefix: &'static str,
    random: usize,
    alphabet: fn(u8) -> bool,
    /// Matches outside temporary directories too.
    anywhere: bool,
    /// The prefix names the generator (`cc<tmp>.s`) rather than being generic (`<tmp>`).
    keep_prefix: bool,
}

const fn temp(
    prefix: &'static str,
    random: usize,
    alphabet: fn(u8) -> bool,
    anywhere: bool,
    keep_prefix: bool,
) -> TempName {
    TempName {
        prefix,
        random,
        alphabet,
        anywhere,
        keep_prefix,
    }
}

/// Known temporary name generators, tried in order.
const TEMP_NAMES: &[TempName] = &[
    // mktemp(1)'s default template, also with -p or --suffix.
    temp("tmp.", 10, alnum, true, false),
    // Rust's tempfile crate (cargo, rustc and most Rust tools): `.tmp` and 6 characters.
    temp(".tmp", 6, alnum, true, false),
    // rustc's metadata output directory inside `target/*/deps`.
    temp("rmeta", 6, alnum, true, true),
    // rustc's own scratch directory (linker inputs).
    temp("rustc", 6, alnum, false, true),
    // gcc/cc: `ccXXXXXX.s`, `ccXXXXXX.o`, `ccXXXXXX.res`...
    temp("cc", 6, alnum, false, true),
    // Python's tempfile without a prefix: `tmp` and 8 of `[a-z0-9_]`.
    temp("tmp", 8, python_random, false, false),
];

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn python_random(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `path` with the per-run parts replaced by placeholders; see the module documentation.
pub fn generalize_path(path: &str) -> String {
    if path.is_empty() || path.len() > MEMO_MAX_PATH {
        return generalize_uncached(path);
    }
    let (slot, hit) = MEMO.with_borrow(|memo| {
        let slot = memo.slot(path);
        (slot, memo.get(slot, path).map(str::to_owned))
    });
    hit.unwrap_or_else(|| {
        let generalised = generalize_uncached(path);
        MEMO.with_borrow_mut(|memo| memo.put(slot, path, &generalised));
        generalised
    })
}

/// Paths longer than this are not memoised (they are rare, and would make the slots big).
const MEMO_MAX_PATH: usize = 256;
/// Slots of the memo: enough for the files a busy process set reopens in a loop.
const MEMO_SLOTS: usize = 512;

thread_local! {
    /// Recently generalised paths of this thread. The engine generalises the same few paths
    /// over and over (a process reopening its files), and generalising scans every component
    /// and allocates twice; a hit costs a hash, a compare and one copy. Generalisation is a
    /// pure function of the path, so a memoised answer is the answer.
    static MEMO: std::cell::RefCell<Memo> = std::cell::RefCell::new(Memo::default());
}

/// A direct-mapped memo of `(path, generalised)`: a miss overwrites its slot, reusing the
/// slot's buffers, so memory stays bounded (`MEMO_SLOTS` × 2 × about `MEMO_MAX_PATH` bytes at
/// most) and a stream of distinct paths allocates nothing more than before.
#[derive(Default)]
struct Memo {
    slots: Vec<(String, String)>,
    /// Seeds the slot hash, per thread: which paths share a slot cannot be planned from outside
    /// (a shared slot only costs recomputations, but a process could keep evicting another's).
    seed: foldhash::fast::RandomState,
}

impl Memo {
    /// The slot of `path`. foldhash reads 8 bytes a step where the FNV-1a it replaced took one
    /// multiply per byte (~40 % of generalising a memoised path, `perf`).
    fn slot(&self, path: &str) -> usize {
        use std::hash::BuildHasher;
        (self.seed.hash_one(path) % MEMO_SLOTS as u64) as usize
    }

    /// The memoised generalisation of `path`, if its slot holds it (the empty path is never
    /// memoised, so an unused slot never answers).
    fn get(&self, slot: usize, path: &str) -> Option<&str> {
        let (raw, generalised) = self.slots.get(slot)?;
        (raw == path).then_some(generalised.as_str())
    }

    fn put(&mut self, slot: usize, path: &str, generalised: &str) {
        if self.slots.is_empty() {
            self.slots.resize_with(MEMO_SLOTS, Default::default);
        }
        let (raw, out) = &mut self.slots[slot];
        raw.clear();
        raw.push_str(path);
        out.clear();
        out.push_str(generalised);
    }
}

/// [`generalize_path`] without the memo.
fn generalize_uncached(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').collect();
    let is_proc = parts.len() > 2 && parts[0].is_empty() && parts[1] == "proc";
    let mut in_temp = false;
    let mut out = String::with_capacity(path.len());
    // Where `part` ends in `path`: `&path[..end]` is the path up to it, without allocating.
    let mut end = 0;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('/');
            end += 1;
        }
        end += part.len();
        let previous = |back: usize| i.checked_sub(back).map(|j| parts[j]);
        let pid_dir = is_proc && is_number(parts[2]);
        if pid_dir && i == 2 {
            out.push_str("<pid>");
        } else if pid_dir && i == 4 && previous(1) == Some("task") && is_number(part) {
            out.push_str("<tid>");
        } else if i > 0 && python_probe(part) && TEMP_DIRS.contains(&&path[..end - part.len() - 1])
        {
            out.push_str("<tmp>");
        } else if previous(2) == Some("incremental") && part.starts_with("s-") {
            out.push_str("s-<tmp>");
            out.push_str(if part.ends_with(".lock") { ".lock" } else { "" });
        } else {
            component(part, in_temp, &mut out);
        }
        in_temp =
            in_temp || *part == TEMP_COMPONENT || (i <= 2 && TEMP_DIRS.contains(&&path[..end]));
    }
    out
}

/// Whether `part` is the name Python's `tempfile.gettempdir()` probes a temporary directory with
/// (8 of `[a-z0-9_]`, no prefix: `/tmp/_9f_obth`); only directly in a temporary directory.
fn python_probe(part: &str) -> bool {
    part.len() == 8 && part.bytes().all(python_random)
}

/// Appends the generalisation of one path component.
fn component(part: &str, in_temp: bool, out: &mut String) {
    if let Some(stable) = toolchain_scratch(part) {
        runs(stable, out);
        out.push_str(if part.ends_with(".rcgu.o") {
            ".<cgu>.rcgu.o"
        } else {
            ".tmp<tmp>"
        });
        return;
    }
    if part.len() == 12 && part.starts_with("target") && part[6..].bytes().all(alnum) {
        out.push_str("target<tmp>"); // cargo's scratch target dir for CACHEDIR.TAG
        return;
    }
    if let Some(tail) = temp_name(part, in_temp, out) {
        runs(tail, out);
    } else {
        runs(part, out);
    }
}

/// Per-run names the Rust toolchain gives its scratch files: codegen units
/// `<crate>-<hash>.<cgu>.<session>.rcgu.o` and rust-lld's `<output>.tmp<random>`. Returns the
/// stable part before them.
fn toolchain_scratch(part: &str) -> Option<&str> {
    if part.ends_with(".rcgu.o") {
        return part.split_once('.').map(|(stable, _)| stable);
    }
    // The random tail is at most 10 bytes, so `.tmp` can only start in the last 14: a byte
    // window there, where `rsplit_once(".tmp")` built a substring searcher for every component
    // of every path (~3 % of the agent's work per record). ASCII `.tmp` always starts on a
    // character boundary.
    let bytes = part.as_bytes();
    let from = bytes.len().saturating_sub(".tmp".len() + 10);
    let at = from + bytes[from..].windows(4).rposition(|w| w == b".tmp")?;
    let (stable, random) = (&part[..at], &part[at + ".tmp".len()..]);
    (!stable.is_empty() && (5..=10).contains(&random.len()) && random.bytes().all(alnum))
        .then_some(stable)
}

/// When `part` is a generated temporary name, appends its placeholder and returns what follows
/// the random characters (a suffix such as `.s`).
fn temp_name<'a>(part: &'a str, in_temp: bool, out: &mut String) -> Option<&'a str> {
    for name in TEMP_NAMES.iter().filter(|n| n.anywhere || in_temp) {
        let Some(rest) = part.strip_prefix(name.prefix) else {
            continue;
        };
        let bytes = rest.as_bytes();
        let random =
            bytes.len() >= name.random && bytes[..name.random].iter().all(|&b| (name.alphabet)(b));
        // The random part ends the name or meets punctuation (`tmpk3j_9x2a.py`): a longer run
        // of letters is some other name (git's `tmp_obj_fNNAkw` is not Python's `tmp_obj_fNN`).
        let ends = bytes
            .get(name.random)
            .is_none_or(|&b| !(name.alphabet)(b) && !b.is_ascii_alphanumeric());
        if random && ends {
            if name.keep_prefix {
                out.push_str(name.prefix);
            }
            out.push_str("<tmp>");
            return Some(&rest[name.random..]);
        }
    }
    // Python's `NamedTemporaryFile(prefix=name, suffix=".tmp")` beside the file it replaces
    // (pip's `RECORDpkptrfkx.tmp`, `INSTALLERyci6mp1s.tmp`): anywhere, `.tmp` says it.
    if let Some(stem) = part.strip_suffix(".tmp")
        && stem.len() > 8
        && stem.is_char_boundary(stem.len() - 8)
    {
        let (head, random) = stem.split_at(stem.len() - 8);
        if random.bytes().all(python_random) {
            runs(head, out);
            out.push_str("<tmp>");
            return Some(".tmp");
        }
    }
    // pip's build directories: `pip-build-env-`, `pip-req-build-`... and 8 of `[a-z0-9_]`.
    if in_temp && part.starts_with("pip-") {
        let (head, tail) = part.rsplit_once('-')?;
        if tail.len() == 8 && tail.bytes().all(python_random) {
            out.push_str(head);
            out.push_str("-<tmp>");
            return Some("");
        }
    }
    None
}

/// Appends `s` with UUIDs, hashes and numbers inside it replaced.
fn runs(s: &str, out: &mut String) {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // Separators (and non-ASCII text) are copied as they are.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        out.push_str(&s[start..i]);
        if i == bytes.len() {
            break;
        }
        if is_uuid_at(bytes, i) {
            out.push_str("<uuid>");
            i += UUID_LEN;
            continue;
        }
        if let Some(len) = timestamp_at(bytes, i) {
            out.push_str("<time>");
            i += len;
            continue;
        }
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        run(&s[start..i], out);
    }
}

const UUID_LEN: usize = 36;

/// Whether a UUID (`8-4-4-4-12` hex digits) starts at `i` and ends a run.
fn is_uuid_at(bytes: &[u8], i: usize) -> bool {
    let Some(candidate) = bytes.get(i..i + UUID_LEN) else {
        return false;
    };
    let shape = candidate.iter().enumerate().all(|(j, &b)| match j {
        8 | 13 | 18 | 23 => b == b'-',
        _ => b.is_ascii_hexdigit(),
    });
    shape && bytes.get(i + UUID_LEN).is_none_or(|&b| !alnum(b))
}

/// The length of the ISO 8601 date and time starting at `i` and ending a run, if one does:
/// `YYYY-MM-DDTHH:MM:SS`, the time's separators `:`, `_` or `-` (file names cannot hold `:`),
/// then optionally a fraction (`.` or `_` and digits) and `Z`. One value tells it is a time,
/// so it needs no learning (shapes cannot: its middle holds punctuation).
fn timestamp_at(bytes: &[u8], i: usize) -> Option<usize> {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd";
    let candidate = bytes.get(i..i + SHAPE.len())?;
    let fits = candidate.iter().zip(SHAPE).all(|(&b, &s)| match s {
        b'd' => b.is_ascii_digit(),
        b':' => matches!(b, b':' | b'_' | b'-'),
        _ => b == s,
    });
    if !fits {
        return None;
    }
    let mut end = i + SHAPE.len();
    if matches!(bytes.get(end), Some(b'.' | b'_'))
        && bytes.get(end + 1).is_some_and(u8::is_ascii_digit)
    {
        end += 1;
        while bytes.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
    }
    if bytes.get(end) == Some(&b'Z') {
        end += 1;
    }
    bytes.get(end).is_none_or(|&b| !alnum(b)).then_some(end - i)
}

/// Appends one run of letters and digits, generalised.
fn run(run: &str, out: &mut String) {
    if is_number(run) {
        out.push_str(if run.len() >= 4 { "<n>" } else { run });
        return;
    }
    if run.len() >= 8 && run.bytes().all(|b| b.is_ascii_hexdigit()) {
        out.push_str("<hash>");
        return;
    }
    // Digits glued to letters: only long numbers (pids, timestamps, random decimals).
    let bytes = run.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let digits = bytes[i].is_ascii_digit();
        while i < bytes.len() && bytes[i].is_ascii_digit() == digits {
            i += 1;
        }
        if digits && i - start >= 6 {
            out.push_str("<n>");
        } else {
            out.push_str(&run[start..i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memo answers what generalising answers: more distinct paths than it has slots
    /// (every slot overwritten, collisions included), twice over, and the empty and long paths
    /// it leaves out.
    #[test]
    fn memo_answers_what_generalising_answers() {
        let long = format!("/tmp/{}/1234567", "a".repeat(MEMO_MAX_PATH));
        let mut paths = vec![String::new(), long];
        paths.extend((0..3 * MEMO_SLOTS).map(|i| format!("/proc/{i}/task/{}/stat", i * 7)));
        paths.extend((0..MEMO_SLOTS).map(|i| format!("/tmp/tmp.{i:0>10}/x-{i}")));
        for round in 0..2 {
            for path in &paths {
                let want = generalize_uncached(path);
                assert_eq!(generalize_path(path), want, "round {round}: {path}");
            }
        }
        assert_eq!(
            generalize_path("/proc/42/task/43/stat"),
            "/proc/<pid>/task/<tid>/stat"
        );
    }

    const UUID: &str = "3f2a9c1e-7b4d-4e0a-9f6b-2c8d1e5a7b90";

    #[test]
    fn generalisation_table() {
        let uuid_sh = format!("/home/runner/work/_temp/{UUID}.sh");
        let set_env = format!("/home/runner/work/_temp/_runner_file_commands/set_env_{UUID}");
        let upper = format!("/run/containerd/{}/log", UUID.to_uppercase());
        let cases: &[(&str, &str)] = &[
            // procfs.
            ("/proc/1234/status", "/proc/<pid>/status"),
            ("/proc/1234", "/proc/<pid>"),
            ("/proc/1/task/77/comm", "/proc/<pid>/task/<tid>/comm"),
            ("/proc/1/task/77", "/proc/<pid>/task/<tid>"),
            ("/proc/1/task", "/proc/<pid>/task"),
            ("/proc/1/fd/3", "/proc/<pid>/fd/3"),
            ("/proc/1/a/b/c/d", "/proc/<pid>/a/b/c/d"),
            ("/proc/self/status", "/proc/self/status"),
            ("/proc/self/task/1234/stat", "/proc/self/task/<n>/stat"),
            ("/proc/meminfo", "/proc/meminfo"),
            ("/proc/12ab/x", "/proc/12ab/x"),
            ("/home/u/proc/1/x", "/home/u/proc/1/x"),
            ("/proc/", "/proc/"),
            // Python's tempfile, as pip and gettempdir() use it (observed names).
            (
                "/w/venv/lib/python3.11/site-packages/pip-23.0.1.dist-info/RECORDweu__yud.tmp",
                "/w/venv/lib/python3.11/site-packages/pip-23.0.1.dist-info/RECORD<tmp>.tmp",
            ),
            ("/w/x/INSTALLERyci6mp1s.tmp", "/w/x/INSTALLER<tmp>.tmp"),
            ("/w/x/INSTALLER.tmp", "/w/x/INSTALLER.tmp"),
            ("/tmp/_9f_obth", "/tmp/<tmp>"),
            ("/tmp/565l_mll", "/tmp/<tmp>"),
            ("/dev/shm/mdy7v_ay", "/dev/shm/<tmp>"),
            ("/home/u/_9f_obth", "/home/u/_9f_obth"),
            ("/tmp/<tmp>/ws/packages", "/tmp/<tmp>/ws/packages"),
            // Timestamps: npm's debug logs, ISO names.
            (
                "/c/npm/_logs/2026-12-07T03_11_55_964Z-debug-0.log",
                "/c/npm/_logs/<time>-debug-0.log",
            ),
            (
                "/var/log/app-2026-12-07T03:11:55.log",
                "/var/log/app-<time>.log",
            ),
            ("/b/2026-12-07T03-11-55Z", "/b/<time>"),
            ("/b/2026-12-07T03_11_55x", "/b/<n>-12-07T03_11_55x"),
            // mktemp(1), Rust tempfile, rustc.
            ("/tmp/tmp.Xa3kQ9zB1m", "/tmp/<tmp>"),
            ("/tmp/tmp.Xa3kQ9zB1m/run.sh", "/tmp/<tmp>/run.sh"),
            ("/tmp/tmp.Xa3kQ9zB1m.json", "/tmp/<tmp>.json"),
            ("/srv/app/tmp.Xa3kQ9zB1m", "/srv/app/<tmp>"),
            ("/tmp/.tmpAbC123", "/tmp/<tmp>"),
            ("/tmp/.tmp9ZzY01/file.txt", "/tmp/<tmp>/file.txt"),
            ("/work/target/debug/.tmpQ1w2E3", "/work/target/debug/<tmp>"),
            ("/tmp/rustcAb12Cd/symbols.o", "/tmp/rustc<tmp>/symbols.o"),
            (
                "/w/target/debug/deps/rmetaX1y2Z3/lib.rmeta",
                "/w/target/debug/deps/rmeta<tmp>/lib.rmeta",
            ),
            // Python, pip, gcc, Go.
            ("/tmp/tmpk3j_9x2a", "/tmp/<tmp>"),
            ("/tmp/tmpk3j_9x2a.py", "/tmp/<tmp>.py"),
            (
                "/tmp/w/.git/objects/4d/tmp_obj_fNNAkw",
                "/tmp/w/.git/objects/4d/tmp_obj_fNNAkw",
            ),
            (
                "/tmp/pip-build-env-a1b2_c3d/overlay",
                "/tmp/pip-build-env-<tmp>/overlay",
            ),
            (
                "/tmp/pip-req-build-zq8w4e1r/setup.py",
                "/tmp/pip-req-build-<tmp>/setup.py",
            ),
            (
                "/tmp/pip-ephem-wheel-cache-x_y9k2la",
                "/tmp/pip-ephem-wheel-cache-<tmp>",
            ),
            ("/tmp/ccAbC123.s", "/tmp/cc<tmp>.s"),
            ("/tmp/cc1aB2cD.o", "/tmp/cc<tmp>.o"),
            (
                "/tmp/ccXyZ987.ltrans0.ltrans.o",
                "/tmp/cc<tmp>.ltrans0.ltrans.o",
            ),
            (
                "/home/runner/work/_temp/ccAbC123.res",
                "/home/runner/work/_temp/cc<tmp>.res",
            ),
            (
                "/tmp/go-build3891284731/b001/exe/main",
                "/tmp/go-build<n>/b001/exe/main",
            ),
            // Runner work and temp directories.
            (&uuid_sh, "/home/runner/work/_temp/<uuid>.sh"),
            (
                &set_env,
                "/home/runner/work/_temp/_runner_file_commands/set_env_<uuid>",
            ),
            (&upper, "/run/containerd/<uuid>/log"),
            (
                "/home/runner/work/app/app/src/main.rs",
                "/home/runner/work/app/app/src/main.rs",
            ),
            (
                "/builds/acme/app/src/main.rs",
                "/builds/acme/app/src/main.rs",
            ),
            (
                "/builds/acme/app.tmp/CI_SERVER_TLS_CA_FILE",
                "/builds/acme/app.tmp/CI_SERVER_TLS_CA_FILE",
            ),
            (
                "/home/runner/_diag/Worker_20231105-123456-utc.log",
                "/home/runner/_diag/Worker_<n>-<n>-utc.log",
            ),
            // Cargo hashes and incremental sessions.
            (
                "/w/target/debug/build/foo-1a2b3c4d5e6f7a8b/out/x.rs",
                "/w/target/debug/build/foo-<hash>/out/x.rs",
            ),
            (
                "/w/target/debug/deps/libfoo-0f1e2d3c4b5a6978.rlib",
                "/w/target/debug/deps/libfoo-<hash>.rlib",
            ),
            (
                "/w/target/debug/.fingerprint/foo-deadbeef01234567/lib-foo",
                "/w/target/debug/.fingerprint/foo-<hash>/lib-foo",
            ),
            (
                "/w/target/debug/incremental/foo-3c5q2o0xl3s6n/s-h1x9n3r1df-0tq4m1s-working/dep-graph.bin",
                "/w/target/debug/incremental/foo-3c5q2o0xl3s6n/s-<tmp>/dep-graph.bin",
            ),
            (
                "/w/target/debug/incremental/foo-3c5q2o0xl3s6n/s-h1x9n3r1df-0tq4m1s-working.lock",
                "/w/target/debug/incremental/foo-3c5q2o0xl3s6n/s-<tmp>.lock",
            ),
            (
                "/var/lib/docker/overlay2/0123456789abcdef0123456789abcdef/merged",
                "/var/lib/docker/overlay2/<hash>/merged",
            ),
            // Numbers.
            (
                "/var/log/app/build-1700000000123.log",
                "/var/log/app/build-<n>.log",
            ),
            ("/run/user/1000/bus", "/run/user/<n>/bus"),
            ("/var/lib/app/v12/x", "/var/lib/app/v12/x"),
            // Ordinary names stay.
            ("/etc/ssh/sshd_config", "/etc/ssh/sshd_config"),
            (
                "/etc/ssh/ssh_host_ed25519_key",
                "/etc/ssh/ssh_host_ed25519_key",
            ),
            (
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
            ),
            (
                "/usr/lib/x86_64-linux-gnu/libssl.so.3",
                "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            ),
            ("/usr/bin/python3.11", "/usr/bin/python3.11"),
            (
                "/usr/lib/x86_64-linux-gnu/gconv/ISO8859-15.so",
                "/usr/lib/x86_64-linux-gnu/gconv/ISO8859-15.so",
            ),
            (
                "/usr/lib/gcc/x86_64-linux-gnu/12/cc1plus",
                "/usr/lib/gcc/x86_64-linux-gnu/12/cc1plus",
            ),
            ("/usr/bin/ccache", "/usr/bin/ccache"),
            ("/tmp/ccache", "/tmp/ccache"),
            (
                "/tmp/upload-artifact/report.xml",
                "/tmp/upload-artifact/report.xml",
            ),
            ("/tmpfoo/tmpk3j_9x2a", "/tmpfoo/tmpk3j_9x2a"),
            (
                "/usr/share/tmpfiles.d/x.conf",
                "/usr/share/tmpfiles.d/x.conf",
            ),
            (
                "/opt/hostedtoolcache/node/18.19.0/x64/bin/node",
                "/opt/hostedtoolcache/node/18.19.0/x64/bin/node",
            ),
            ("memfd:payload (deleted)", "memfd:payload (deleted)"),
            ("/tmp/é-ü/x", "/tmp/é-ü/x"),
            ("relative/path-1234", "relative/path-<n>"),
            ("", ""),
            ("/", "/"),
        ];
        for (path, want) in cases {
            assert_eq!(generalize_path(path), *want, "{path}");
            assert_eq!(generalize_path(want), *want, "idempotent: {want}");
        }
    }

    #[test]
    fn credential_names_survive() {
        let cases = [
            ("/home/u/.ssh/id_ed25519", "/home/u/.ssh/id_ed25519"),
            ("/tmp/tmp.Xa3kQ9zB1m/.ssh/id_rsa", "/tmp/<tmp>/.ssh/id_rsa"),
            (
                "/tmp/.tmpAbC123/.aws/credentials",
                "/tmp/<tmp>/.aws/credentials",
            ),
            (
                "/home/runner/work/_temp/1234567890/.docker/config.json",
                "/home/runner/work/_temp/<n>/.docker/config.json",
            ),
            (
                "/home/u1700000000/.git-credentials",
                "/home/u<n>/.git-credentials",
            ),
            (
                "/var/run/secrets/kubernetes.io/serviceaccount/token",
                "/var/run/secrets/kubernetes.io/serviceaccount/token",
            ),
            ("/etc/shadow", "/etc/shadow"),
        ];
        for (path, want) in cases {
            assert_eq!(generalize_path(path), want, "{path}");
        }
    }

    #[test]
    fn two_runs_generalise_alike() {
        let run = |tmp: &str, rust: &str, hash: &str, uuid: &str, pid: u32| {
            [
                format!("/tmp/tmp.{tmp}/script.sh"),
                format!("/tmp/.tmp{rust}"),
                format!("/w/target/debug/build/foo-{hash}/out"),
                format!("/home/runner/work/_temp/{uuid}.sh"),
                format!("/proc/{pid}/task/{pid}/stat"),
                format!("/tmp/go-build{pid}{pid}/b001"),
            ]
            .map(|p| generalize_path(&p))
        };
        assert_eq!(
            run("AAAAAAAAAA", "zzzzzz", "0123456789abcdef", UUID, 100_000),
            run(
                "b1C2d3E4f5",
                "Q1w2E3",
                "fedcba9876543210",
                "00000000-0000-4000-8000-000000000000",
                4_194_303
            ),
        );
    }

    #[test]
    fn rust_toolchain_scratch_names() {
        let cases = [
            (
                "/w/target/debug/deps/hello_rs-1a2b3c4d5e6f7a8b.8oby1zgg1buvksvm7qob97vz1.1u3psw3.rcgu.o",
                "/w/target/debug/deps/hello_rs-<hash>.<cgu>.rcgu.o",
            ),
            (
                "/w/target/debug/deps/hello_rs-1a2b3c4d5e6f7a8b.tmp1b4a8d0",
                "/w/target/debug/deps/hello_rs-<hash>.tmp<tmp>",
            ),
            (
                "/w/targetAb12Cd/CACHEDIR.TAG",
                "/w/target<tmp>/CACHEDIR.TAG",
            ),
            ("/w/target/CACHEDIR.TAG", "/w/target/CACHEDIR.TAG"),
            ("/etc/app.tmpl", "/etc/app.tmpl"),
        ];
        for (path, want) in cases {
            assert_eq!(generalize_path(path), want, "{path}");
        }
        // The `.tmp` tail's bounds: 5 to 10 random characters, the last `.tmp` counts, a
        // stable part is needed, non-ASCII before it is fine.
        for (part, stable) in [
            ("x.tmpabcde", Some("x")),
            ("x.tmpabcdefghij", Some("x")),
            ("x.tmpabcd", None),
            ("x.tmpabcdefghijk", None),
            ("é.tmp.tmpab1de", Some("é.tmp")),
            (".tmpabcde", None),
            ("x.tmpab-de", None),
        ] {
            assert_eq!(toolchain_scratch(part), stable, "{part}");
        }
    }
}
