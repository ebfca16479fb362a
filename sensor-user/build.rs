//! Builds `sensor-ebpf` for `bpfel-unknown-none` and leaves the object in `OUT_DIR/sensor-ebpf`
//! for `include_bytes_aligned!`.
//!
//! Toolchains, in order of preference:
//! 1. `SENSOR_BPF_RUSTC`, or Debian's `/usr/bin/rustc` (package `rustc-web`) when its sysroot has
//!    a prebuilt `core` for `bpfel-unknown-none` (package `libstd-rust-web-dev-bpf`);
//! 2. otherwise rustup's nightly with `-Z build-std=core` (the usual aya setup).
//!
//! `SENSOR_EBPF_STUB=1` writes an empty object instead, for fast editor and lint loops; such a
//! sensor refuses to start with a clear message.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

const TARGET: &str = "bpfel-unknown-none";

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let object = out_dir.join("sensor-ebpf");
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.parent().context("workspace root")?;
    for watched in [
        "sensor-ebpf/src",
        "sensor-ebpf/Cargo.toml",
        "sensor-common/src",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    for var in ["SENSOR_EBPF_STUB", "SENSOR_BPF_RUSTC"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if env::var_os("SENSOR_EBPF_STUB").is_some_and(|v| v == "1") {
        fs::write(&object, [])?;
        return Ok(());
    }

    let ebpf_manifest = root.join("sensor-ebpf/Cargo.toml");
    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // The outer build's settings must not leak into a build for another target.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let rustflags = ["-C", "debuginfo=2", "-C", "link-arg=--btf"];
    match debian_bpf_rustc() {
        Some(rustc) => {
            cmd.env("RUSTC", rustc).env("RUSTC_BOOTSTRAP", "1");
            cmd.arg("build");
        }
        None => {
            cmd.args(["+nightly", "build", "-Z", "build-std=core"]);
        }
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags.join("\x1f"))
        .args(["--release", "--target", TARGET, "--manifest-path"])
        .arg(&ebpf_manifest)
        .arg("--target-dir")
        .arg(&target_dir);
    let status = cmd.status().context("running cargo for sensor-ebpf")?;
    if !status.success() {
        bail!(
            "building the eBPF programs failed. Install the toolchain with `scripts/setup` \
             (Debian rustc-web + libstd-rust-web-dev-bpf + bpf-linker), or use nightly with \
             rust-src and bpf-linker; set SENSOR_EBPF_STUB=1 to build without them"
        );
    }
    fs::copy(target_dir.join(TARGET).join("release/sensor-ebpf"), &object)
        .context("copying the eBPF object")?;
    Ok(())
}

/// A rustc with a prebuilt `core` for the BPF target, if there is one.
fn debian_bpf_rustc() -> Option<PathBuf> {
    let rustc = env::var_os("SENSOR_BPF_RUSTC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/rustc"));
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let sysroot = String::from_utf8(sysroot.stdout).ok()?;
    Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(TARGET)
        .is_dir()
        .then_some(rustc)
}
