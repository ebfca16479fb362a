//! Registry caches for the jobs, filled by a real fetch the first time and reused afterwards, the
//! way a CI cache (`actions/cache` of `~/.cargo/registry`, `~/.npm`, a pip wheelhouse) is
//! restored before a build: repeated runs do not depend on the network mid-suite.
//!
//! Layout under the cache directory (`target/detect-cache` by default):
//! `cargo-home/` (CARGO_HOME with crates.io's index and crates) and `rust/Cargo.lock`;
//! `npm/` (npm's cache) and `node/package-lock.json`; `wheels/` (a pip wheelhouse) and
//! `py-tools/` (the venv whose pip downloads it).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::workloads::Workload;

/// Where the registry caches live, and what they add to a job.
pub struct Cache {
    pub dir: PathBuf,
}

impl Cache {
    pub fn cargo_home(&self) -> PathBuf {
        self.dir.join("cargo-home")
    }
    pub fn npm(&self) -> PathBuf {
        self.dir.join("npm")
    }
    pub fn wheels(&self) -> PathBuf {
        self.dir.join("wheels")
    }

    /// The job's environment for the caches.
    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("CARGO_HOME", self.cargo_home()),
            ("npm_config_cache", self.npm()),
            ("WHEELHOUSE", self.wheels()),
        ]
    }

    /// Lock files each checkout of `w` gets: (path in the workspace, file in the cache).
    pub fn locks(&self, w: Workload) -> Vec<(&'static str, PathBuf)> {
        match w {
            Workload::Rust => vec![("Cargo.lock", self.dir.join("rust/Cargo.lock"))],
            Workload::Node => vec![("package-lock.json", self.dir.join("node/package-lock.json"))],
            _ => Vec::new(),
        }
    }

    /// Makes sure the cache holds everything `w` needs: offline check first, a real fetch from
    /// the registry when that fails. `tools` is the PATH and rustup environment of the jobs.
    pub fn prepare(&self, w: Workload, tools: &[(String, String)]) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        // Another suite may be preparing the same cache right now.
        let lock = std::fs::File::create(self.dir.join(".lock"))?;
        // SAFETY: flock on a file descriptor we own; released when `lock` is closed.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
            bail!(
                "locking {}: {}",
                self.dir.display(),
                std::io::Error::last_os_error()
            );
        }
        let seed = self.dir.join(match w {
            Workload::Rust => "rust",
            Workload::Node => "node",
            Workload::Python => "py",
            _ => return Ok(()),
        });
        std::fs::create_dir_all(&seed)?;
        for (path, text) in w.sources() {
            let p = seed.join(path);
            std::fs::create_dir_all(p.parent().context("source path")?)?;
            std::fs::write(p, text)?;
        }
        let run = |args: &[&str]| -> anyhow::Result<bool> {
            let mut cmd = Command::new(args[0]);
            cmd.args(&args[1..])
                .current_dir(&seed)
                .env_clear()
                .envs(tools.iter().map(|(k, v)| (k, v)))
                // Only the caches' own settings: no user .npmrc, pip.conf or cargo config.
                .env("HOME", &seed)
                .env("CI", "true");
            for (k, v) in self.env() {
                cmd.env(k, v);
            }
            let out = cmd.output().with_context(|| format!("running {args:?}"))?;
            if !out.status.success() {
                eprintln!(
                    "[detect] {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(out.status.success())
        };
        let offline_ok = match w {
            Workload::Rust => {
                seed.join("Cargo.lock").exists()
                    && run(&["cargo", "fetch", "--locked", "--offline"])?
            }
            Workload::Node => {
                seed.join("package-lock.json").exists()
                    && run(&["npm", "ci", "--offline", "--no-audit", "--no-fund"])?
            }
            Workload::Python => {
                self.dir.join("py-tools/bin/pip").exists()
                    && run(&[
                        "../py-tools/bin/pip",
                        "download",
                        "--quiet",
                        "--no-index",
                        "--find-links",
                        &self.wheels().display().to_string(),
                        "-d",
                        &self.wheels().display().to_string(),
                        "-r",
                        "requirements.txt",
                    ])?
            }
            _ => true,
        };
        if offline_ok {
            return Ok(());
        }
        eprintln!(
            "[detect] fetching {} dependencies from the registry",
            w.job()
        );
        let fetched = match w {
            Workload::Rust => {
                run(&["cargo", "generate-lockfile"])? && run(&["cargo", "fetch", "--locked"])?
            }
            Workload::Node => run(&[
                "npm",
                "install",
                "--no-audit",
                "--no-fund",
                "--no-update-notifier",
            ])?,
            Workload::Python => {
                (self.dir.join("py-tools/bin/pip").exists()
                    || run(&["/usr/bin/python3", "-m", "venv", "../py-tools"])?)
                    && run(&[
                        "../py-tools/bin/pip",
                        "download",
                        "--quiet",
                        "--disable-pip-version-check",
                        "-d",
                        &self.wheels().display().to_string(),
                        "-r",
                        "requirements.txt",
                    ])?
            }
            _ => true,
        };
        if !fetched {
            bail!(
                "fetching the {} job's dependencies from the registry failed (see above)",
                w.job()
            );
        }
        Ok(())
    }
}

/// The cache directory next to a build output directory (`target/debug` → `target/detect-cache`).
pub fn default_dir(bin_dir: &Path) -> PathBuf {
    bin_dir.parent().unwrap_or(bin_dir).join("detect-cache")
}
