//! Running a CI job the way a GitHub Actions runner does: a fresh checkout in `$WS`, the job's
//! variables set (a new `GITHUB_RUN_ID` each run, `CI=true`), a clean environment, the registry
//! caches restored, then the job script with an optional last step.
//!
//! Also usable on its own (std, anyhow, libc only): a privileged test can `#[path]`-include this
//! module's directory to run real jobs under the real sensor.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::attacks::SECRETS;
use super::cache::Cache;
use super::store::{Run, now_ns};
use super::workloads::Workload;

/// The repository every job of this suite claims to be from. The pid keeps two suites running at
/// once on one host (each with its own sensors, all of which see every job) from sharing
/// workloads and run ids.
pub fn repo() -> String {
    format!("detect/suite-{}", std::process::id())
}

/// The job script: checkout and cache restore are done by the runner; build and test, report to a
/// known endpoint, then the (empty or malicious) extra step.
const JOB: &str = "set -eu\ncd \"$WS\"\n__BUILD__exec 3<>\"/dev/tcp/127.0.0.1/$KNOWN_PORT\"; echo ok >&3; exec 3>&-\n. \"$JOBDIR/step.sh\"\n";

/// The sensor's workload id for a job.
pub fn workload_id(w: Workload) -> String {
    format!("github:{}/ci/{}", repo(), w.job())
}

/// Kills a child on drop so a failure leaves nothing running.
pub struct Guard(pub Child);

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

pub fn wait_until<T>(
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

/// PATH (Debian's tools, and the cargo the harness runs under first) plus rustup's variables,
/// which a job with its own `$HOME` needs to find the toolchain.
pub fn tool_env() -> Vec<(String, String)> {
    let mut path = "/usr/bin:/bin:/usr/sbin:/sbin".to_owned();
    let mut env = Vec::new();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    if let Some(dir) = Path::new(&cargo)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        path = format!("{}:{path}", dir.display());
    } else if let Ok(home) = std::env::var("HOME") {
        path = format!("{home}/.cargo/bin:{path}");
    }
    env.push(("PATH".to_owned(), path));
    let rustup_home = std::env::var("RUSTUP_HOME")
        .unwrap_or_else(|_| format!("{}/.rustup", std::env::var("HOME").unwrap_or_default()));
    env.push(("RUSTUP_HOME".to_owned(), rustup_home));
    if let Ok(t) = std::env::var("RUSTUP_TOOLCHAIN") {
        env.push(("RUSTUP_TOOLCHAIN".to_owned(), t));
    }
    env
}

/// Runs jobs under `root/<job>/`, numbering runs from `next_run`.
pub struct JobRunner {
    pub root: PathBuf,
    pub actor: PathBuf,
    pub known_port: u16,
    pub cache: Cache,
    pub tools: Vec<(String, String)>,
    pub next_run: u32,
}

impl JobRunner {
    pub fn job_dir(&self, w: Workload) -> PathBuf {
        self.root.join(w.job())
    }

    /// The job's home with its fake secrets, its script, and its registry cache.
    pub fn prepare(&self, w: Workload) -> anyhow::Result<()> {
        let dir = self.job_dir(w);
        write_secrets(&dir.join("home"))?;
        std::fs::write(dir.join("job.sh"), JOB.replace("__BUILD__", w.build()))?;
        self.cache.prepare(w, &self.tools)
    }

    /// One run of the job: a fresh checkout, then the job with `step` as its last step.
    pub fn run(&mut self, w: Workload, step: &str, exfil_port: Option<u16>) -> anyhow::Result<Run> {
        let port = exfil_port.map(|p| p.to_string()).unwrap_or_default();
        self.run_env(w, step, &[("EXFIL_PORT", port)])
    }

    /// [`JobRunner::run`] with `extra` variables for the step (set last, so they win).
    pub fn run_env(
        &mut self,
        w: Workload,
        step: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Run> {
        self.next_run += 1;
        let run_id = self.next_run.to_string();
        let dir = self.job_dir(w);
        let ws = dir.join("ws");
        let _ = std::fs::remove_dir_all(&ws);
        let _ = std::fs::remove_file(dir.join("src.tgz"));
        for (path, text) in w.sources() {
            let p = ws.join(path);
            std::fs::create_dir_all(p.parent().context("source path")?)?;
            std::fs::write(p, text)?;
        }
        for (path, from) in self.cache.locks(w) {
            std::fs::copy(&from, ws.join(path))
                .with_context(|| format!("restoring {}", from.display()))?;
        }
        std::fs::write(dir.join("step.sh"), step)?;
        let mut cmd = Command::new("/bin/bash");
        cmd.arg(dir.join("job.sh"))
            .env_clear()
            .envs(self.tools.iter().map(|(k, v)| (k, v)))
            .envs(self.cache.env())
            .env("CI", "true")
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_REPOSITORY", repo())
            .env("GITHUB_WORKFLOW", "ci")
            .env("GITHUB_JOB", w.job())
            .env("GITHUB_RUN_ID", &run_id)
            .env("GITHUB_RUN_NUMBER", &run_id)
            .env("HOME", dir.join("home"))
            .env("WS", &ws)
            .env("JOBDIR", &dir)
            .env("ACTOR", &self.actor)
            .env("ARTIFACT", w.artifact())
            .env("KNOWN_PORT", self.known_port.to_string())
            .envs(extra.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null());
        let start_ns = now_ns();
        let out = cmd.output()?;
        if !out.status.success() {
            bail!(
                "{} run {run_id} failed: {}",
                w.job(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Run {
            run_id: Some(run_id),
            start_ns,
            end_ns: now_ns(),
        })
    }
}

/// Fake secrets (and a shell profile) under `home`.
pub fn write_secrets(home: &Path) -> anyhow::Result<()> {
    for s in SECRETS {
        let p = home.join(s);
        std::fs::create_dir_all(p.parent().context("secret path")?)?;
        std::fs::write(&p, "token=not-a-real-secret\n")?;
    }
    Ok(())
}
