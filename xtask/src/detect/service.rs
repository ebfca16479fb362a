//! The long-running service workload: nginx (Debian's `nginx-light`) in its own cgroup, serving
//! files under a paced HTTP load, with the operator's routine actions (config reload, log
//! reopening after rotation) run inside the service's cgroup the way systemd's `ExecReload` runs.
//! The sensor learns it for `--learning-period` of time (it has no CI run id), then judges it.
//!
//! Attacks are injected as processes inside the service's cgroup: what a remote code execution in
//! the service would run. A service "run" is a time window (see `store::Run`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

use super::jobs::{Guard, wait_until, write_secrets};
use super::store::{Run, now_ns};

/// Requests per second of the load generator.
const LOAD_RATE: u64 = 50;

pub struct Service {
    dir: PathBuf,
    cgroup: PathBuf,
    /// The cgroup's path as the sensor names it (`cgroup:<path>`).
    cgroup_rel: String,
    nginx: Option<Guard>,
    stop_load: Arc<AtomicBool>,
    /// Requests answered so far.
    pub served: Arc<AtomicU64>,
    load: Option<std::thread::JoinHandle<()>>,
}

/// The cgroup v2 hierarchy: `/sys/fs/cgroup/unified` on hybrid hosts, else `/sys/fs/cgroup`.
pub(super) fn cgroup2_root() -> PathBuf {
    let hybrid = Path::new("/sys/fs/cgroup/unified");
    if hybrid.join("cgroup.procs").exists() {
        hybrid.to_owned()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

impl Service {
    /// Starts nginx in a new cgroup under `root` and the load against it.
    pub fn start(root: &Path) -> anyhow::Result<Service> {
        if Command::new("nginx")
            .arg("-v")
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            bail!("nginx is not installed (scripts/setup installs nginx-light)");
        }
        let dir = root.join("nginx-service");
        let www = dir.join("www");
        std::fs::create_dir_all(&www)?;
        write_secrets(&dir.join("home"))?;
        std::fs::write(www.join("index.html"), "<h1>hello</h1>\n")?;
        std::fs::write(www.join("out.txt"), "report\n")?;
        std::fs::write(www.join("data.bin"), vec![7u8; 16 * 1024])?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let d = dir.display();
        std::fs::write(
            dir.join("nginx.conf"),
            format!(
                "user root;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n  access_log {d}/access.log;\n  types {{ text/html html; application/octet-stream bin; }}\n\
                 server {{ listen 127.0.0.1:{port}; root {d}/www; }}\n}}\n"
            ),
        )?;
        let name = format!("detect-svc-{}", std::process::id());
        let cgroup = cgroup2_root().join(&name);
        std::fs::create_dir_all(&cgroup)
            .with_context(|| format!("creating {}", cgroup.display()))?;
        let nginx = Guard(
            Command::new("/bin/sh")
                .args([
                    "-c",
                    "echo $$ > \"$1/cgroup.procs\" && exec nginx -p \"$2\" -c \"$2/nginx.conf\" -g 'daemon off;'",
                    "sh",
                ])
                .arg(&cgroup)
                .arg(&dir)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("HOME", dir.join("home"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting nginx")?,
        );
        wait_until("nginx to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        })?;
        let stop_load = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let (stop, count) = (stop_load.clone(), served.clone());
        let load = std::thread::spawn(move || load(port, &stop, &count));
        Ok(Service {
            dir,
            cgroup,
            cgroup_rel: format!("/{name}"),
            nginx: Some(nginx),
            stop_load,
            served,
            load: Some(load),
        })
    }

    /// The service's `$HOME` (with its fake secrets).
    pub fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    pub fn workload_id(&self) -> String {
        format!("cgroup:{}", self.cgroup_rel)
    }

    /// Runs `script` with bash inside the service's cgroup, with `env`, from the served
    /// directory; returns the time window it ran in.
    pub fn exec_in(&self, script: &str, env: &[(&str, String)]) -> anyhow::Result<Run> {
        let step = self.dir.join("step.sh");
        std::fs::write(&step, script)?;
        let start_ns = now_ns();
        let out = Command::new("/bin/bash")
            .args([
                "-c",
                "echo $$ > \"$CGROUP/cgroup.procs\" && set -eu && cd \"$WS\" && . \"$STEP\"",
            ])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CGROUP", &self.cgroup)
            .env("STEP", &step)
            .env("WS", self.dir.join("www"))
            .env("HOME", self.dir.join("home"))
            .env("ARTIFACT", "index.html")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "service step failed: {}\n{script}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Run {
            run_id: None,
            start_ns,
            end_ns: now_ns(),
        })
    }

    /// The operator's routine: rotate the access log and reopen it, then reload the config.
    pub fn operate(&self) -> anyhow::Result<()> {
        let d = self.dir.display();
        self.exec_in(
            &format!(
                "mv {d}/access.log {d}/access.log.1\nnginx -p {d} -c {d}/nginx.conf -s reopen\nnginx -p {d} -c {d}/nginx.conf -s reload\n"
            ),
            &[],
        )?;
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop_load.store(true, Ordering::Relaxed);
        if let Some(l) = self.load.take() {
            let _ = l.join();
        }
        drop(self.nginx.take());
        // Workers and stray attack processes may take a moment to leave the cgroup.
        for pid in std::fs::read_to_string(self.cgroup.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse::<i32>().ok())
        {
            // SAFETY: these are processes this suite started in its own cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = wait_until(
            "the service cgroup to empty",
            Duration::from_secs(5),
            || std::fs::remove_dir(&self.cgroup).ok(),
        );
    }
}

/// Paced GETs over new connections: pages, a 16 KiB file and a missing path (404).
fn load(port: u16, stop: &AtomicBool, served: &AtomicU64) {
    let paths = ["/", "/data.bin", "/index.html", "/missing"];
    let mut i = 0usize;
    let interval = Duration::from_micros(1_000_000 / LOAD_RATE);
    while !stop.load(Ordering::Relaxed) {
        let started = std::time::Instant::now();
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let req = format!(
                "GET {} HTTP/1.0\r\nHost: localhost\r\n\r\n",
                paths[i % paths.len()]
            );
            let mut body = Vec::new();
            if s.write_all(req.as_bytes()).is_ok() && s.read_to_end(&mut body).is_ok() {
                served.fetch_add(1, Ordering::Relaxed);
            }
        }
        i += 1;
        if let Some(left) = interval.checked_sub(started.elapsed()) {
            std::thread::sleep(left);
        }
    }
}
