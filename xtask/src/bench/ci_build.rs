//! A realistic CI job: building a real project fetched from crates.io, from clean. `cargo install
//! --locked --debug hexyl@0.16.0` (a hex viewer: clap, anyhow, owo-colors, terminal_size and
//! their dependencies, about 30 crates with build scripts and proc macros) into a fresh target
//! directory each round. The first use fetches the crate and its dependencies into
//! `target/bench-cache/cargo-home` (a real download); the measured builds run `--offline` from that
//! cache, like a CI job after restoring its cargo cache, so the network is not in the numbers.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::detect::tool_env;

pub const PROJECT: &str = "hexyl@0.16.0";

fn cargo_install(cache: &Path, out: &Path, offline: bool) -> anyhow::Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.args(["install", "--quiet", "--locked", "--debug", "--force"])
        .args(offline.then_some("--offline"))
        .arg("--root")
        .arg(out.join("root"))
        .arg("--target-dir")
        .arg(out.join("target"))
        .arg(PROJECT)
        .env_clear()
        .envs(tool_env())
        .env("HOME", out)
        .env("CARGO_HOME", cache.join("cargo-home"))
        .stdout(Stdio::null());
    let result = cmd.output().context("running cargo install")?;
    if !result.status.success() {
        bail!(
            "cargo install {PROJECT}{} failed: {}",
            if offline { " --offline" } else { "" },
            String::from_utf8_lossy(&result.stderr).trim()
        );
    }
    Ok(())
}

/// Fetches the project and its dependencies once (a real download from crates.io, and a first
/// build that is not measured).
pub fn prepare(cache: &Path) -> anyhow::Result<()> {
    let marker = cache.join(format!("{PROJECT}.fetched"));
    if marker.exists() {
        return Ok(());
    }
    eprintln!("[bench] fetching {PROJECT} and its dependencies from crates.io");
    std::fs::create_dir_all(cache)?;
    let scratch = tempfile::tempdir()?;
    cargo_install(cache, scratch.path(), false)?;
    std::fs::write(marker, "")?;
    Ok(())
}

/// One build from clean; returns its wall time in seconds.
pub fn build(cache: &Path) -> anyhow::Result<f64> {
    let scratch = tempfile::tempdir()?;
    let started = Instant::now();
    cargo_install(cache, scratch.path(), true)?;
    Ok(started.elapsed().as_secs_f64())
}
