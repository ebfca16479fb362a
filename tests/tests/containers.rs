//! Real containers started by Debian's podman (rootful, runc, an image imported from a
//! busybox-static rootfs: no registry is reachable), watched by the real sensor reporting to the
//! real collector.
//!
//! - exec, open and connect inside a container are attributed to `container:<image>`, with the
//!   container id as evidence; podman and conmon on the host side are not merged in;
//! - two containers of one image share one baseline: what the first taught the second is not
//!   told again, and an attack inside the second is reported against it;
//! - a runtime source that is slow or lies gives a logged reason and the cgroup fallback
//!   (`container:<id>`), and the agent keeps working.
//!
//! podman, runc and busybox-static are installed by `scripts/install-podman` when missing; where
//! that cannot work (not root, no network), the tests say so and skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::stack::Stack;
use tests::wait_for;

const IMAGE: &str = "localhost/sensor-test-app:1";
const WORKLOAD: &str = "container:localhost/sensor-test-app:1";
/// What every container of the image does.
const NORMAL: &str = "cat /etc/app.conf > /dev/null; ls / > /dev/null; \
                      nc -w 1 127.0.0.1 9 < /dev/null 2> /dev/null; true";
/// What an attacker does in one of them: a file and a port the image never touched.
const ATTACK: &str =
    "cat /etc/token > /dev/null; nc -w 1 127.0.0.1 4444 < /dev/null 2> /dev/null; true";

/// podman's settings for this VM: no default rlimits (the sandbox lacks CAP_SYS_RESOURCE).
fn containers_conf() -> PathBuf {
    let path = std::env::temp_dir().join("sensor-tests-containers.conf");
    std::fs::write(&path, "[containers]\ndefault_ulimits = []\n").unwrap();
    path
}

/// podman ready with the test image, or `None` (with the reason printed) when it cannot be.
fn podman() -> Option<&'static ()> {
    static READY: OnceLock<Option<()>> = OnceLock::new();
    READY
        .get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-podman");
            if !Command::new(&script).status().is_ok_and(|s| s.success()) {
                println!(
                    "skipped: podman/runc/busybox-static are missing and {} could not install \
                     them (no network or not root?)",
                    script.display()
                );
                return None;
            }
            import_image();
            Some(())
        })
        .as_ref()
}

/// Builds the image from a busybox-static rootfs tar (`podman import`).
fn import_image() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "ls", "nc", "true", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/app.conf"), "setting=1\n").unwrap();
    std::fs::write(root.join("etc/token"), "s3cr3t\n").unwrap();
    let tar = dir.path().join("rootfs.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "tar the rootfs");
    let out = podman_cmd()
        .arg("import")
        .arg(&tar)
        .arg(IMAGE)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn podman_cmd() -> Command {
    let mut cmd = Command::new("podman");
    cmd.env("CONTAINERS_CONF", containers_conf())
        .args(["--runtime", "runc"]);
    cmd
}

/// Runs `script` in a new container of the image named `name`, to completion; its id.
fn run_container(name: &str, script: &str) -> String {
    let _ = podman_cmd().args(["rm", "-f", name]).output();
    let out = podman_cmd()
        .args(["run", "-d", "--network", "none", "--name", name, IMAGE])
        .args(["/bin/sh", "-c", script])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "podman run {name}");
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let wait = podman_cmd().args(["wait", &id]).output().unwrap();
    assert!(wait.status.success(), "podman wait {name}");
    assert_eq!(
        String::from_utf8_lossy(&wait.stdout).trim(),
        "0",
        "{name} exits 0"
    );
    id
}

/// Removes the test's containers at the end, whatever happened.
struct Containers(Vec<&'static str>);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = podman_cmd().args(["rm", "-f", name]).output();
        }
    }
}

fn dimensions(baseline: &Value) -> String {
    baseline["dimensions"].to_string()
}

/// `workload`'s baseline once it holds every one of `wanted` (20 s), with what it held if not.
fn baseline_with(stack: &Stack, workload: &str, wanted: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = stack.baseline(workload);
        if let Some(b) = &found
            && wanted.iter().all(|w| dimensions(b).contains(w))
        {
            return b.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{workload}'s baseline lacks one of {wanted:?} after 20 s: {found:?}\nbaselines: \
             {:?}\nsensor log:\n{}",
            stack.baselines(),
            stack.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn containers_of_one_image_share_a_baseline_and_an_attack_is_reported_against_it() {
    if podman().is_none() {
        return;
    }
    let _cleanup = Containers(vec!["sensor-test-c1", "sensor-test-c2"]);
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path(), &[]);

    // First container: learnt from, under the image's name.
    let first = run_container("sensor-test-c1", NORMAL);
    // busybox applets run as /bin/busybox (the kernel resolves the symlink).
    let learnt = baseline_with(
        &stack,
        WORKLOAD,
        &["/bin/busybox", "/etc/app.conf", "\"127.0.0.1\""],
    );
    // The host-side launchers run outside the container: neither their executables nor their
    // own files (conmon's userdata, podman's state) are in its baseline. conmon does appear as
    // the parent of the container's first process (its exec edge), which is lineage, not its
    // behaviour.
    let executables = learnt["dimensions"]["executable"].to_string();
    let files = learnt["dimensions"]["file-access"].to_string();
    for launcher in ["podman", "conmon"] {
        assert!(
            !executables.contains(launcher),
            "{launcher} is not an executable of the container: {executables}"
        );
    }
    for state in [
        "overlay-containers",
        "/run/libpod",
        "/var/lib/containers/storage/libpod",
    ] {
        assert!(
            !files.contains(state),
            "the launcher's files ({state}) are not in the container's baseline: {files}"
        );
    }
    assert!(
        stack.baseline(&format!("container:{first}")).is_none(),
        "no baseline under the container id"
    );

    // The operator ends the image's learning (`sensor baseline freeze`): from now on every event
    // of the image is judged. (Waiting out a short learning period instead would also end the
    // learning of everything else on this shared machine, and flood the test with its news.)
    let out = Command::new(tests::workspace_bin("sensor"))
        .args(["baseline", "freeze", WORKLOAD, "--state-dir"])
        .arg(&stack.state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sensor baseline freeze: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "the agent to freeze the image's baseline",
        Duration::from_secs(20),
        || {
            stack
                .baselines()
                .into_iter()
                .find(|b| b["workload"] == WORKLOAD && b["frozen"] == true)
        },
    );

    // Second container, another id, the same image: its normal part is known, its attack is not.
    let second = run_container("sensor-test-c2", &format!("{NORMAL}; {ATTACK}"));
    assert_ne!(first, second);
    let deadline = Instant::now() + Duration::from_secs(20);
    let found = loop {
        let all = stack.deviations(WORKLOAD);
        let seen = |what: &str| {
            all.iter()
                .any(|d| d["summary"].as_str().unwrap_or("").contains(what))
        };
        if seen("/etc/token") && seen("4444") {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "the attack in the second container is not reported within 20 s: {all:#?}\n\
             baselines: {:#?}\nsensor log:\n{}",
            stack.baselines(),
            stack.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let evidence = format!("container-id:{second}");
    for d in &found {
        let summary = d["summary"].as_str().unwrap_or("");
        assert!(
            !summary.contains("/etc/app.conf") && !summary.contains("127.0.0.1:9 "),
            "what the first container taught is not reported again: {d}"
        );
        if summary.contains("/etc/token") || summary.contains("4444") {
            assert_eq!(d["workload_kind"], "container", "{d}");
            assert!(
                d["signals"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| *s == evidence),
                "the second container's id as evidence: {d}"
            );
        }
    }
    assert!(
        stack.deviations(&format!("container:{second}")).is_empty(),
        "nothing under the second container's id"
    );
}

/// A Docker API socket that accepts and never answers, and one that answers nonsense.
fn hostile_sockets(dir: &Path) -> (PathBuf, PathBuf, Vec<std::thread::JoinHandle<()>>) {
    use std::io::{Read, Write};
    let slow = dir.join("slow.sock");
    let lying = dir.join("lying.sock");
    let slow_listener = std::os::unix::net::UnixListener::bind(&slow).unwrap();
    let lying_listener = std::os::unix::net::UnixListener::bind(&lying).unwrap();
    let slow_thread = std::thread::spawn(move || {
        // Holds every connection open without a byte of answer, for the test's life.
        let mut held = Vec::new();
        for conn in slow_listener.incoming().flatten().take(16) {
            held.push(conn);
        }
    });
    let lying_thread = std::thread::spawn(move || {
        for mut conn in lying_listener.incoming().flatten().take(16) {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ =
                conn.write_all(b"HTTP/1.0 200 OK\r\n\r\n{\"Config\": [\"not\", \"an\", \"object\"");
        }
    });
    (slow, lying, vec![slow_thread, lying_thread])
}

#[test]
fn a_slow_or_lying_runtime_gives_a_reason_and_the_cgroup_fallback() {
    if podman().is_none() {
        return;
    }
    let _cleanup = Containers(vec!["sensor-test-c3"]);
    let dir = tempfile::tempdir().unwrap();
    let (slow, lying, _threads) = hostile_sockets(dir.path());
    let slow_source = format!("docker-api:{}", slow.display());
    let lying_source = format!("docker-api:{}", lying.display());
    let stack = Stack::start(
        dir.path(),
        &[
            "--container-source",
            &slow_source,
            "--container-source",
            &lying_source,
        ],
    );
    let started = Instant::now();
    let id = run_container("sensor-test-c3", NORMAL);
    // The agent kept going: the container's activity is on disk under its id, found by cgroup.
    let fallback = format!("container:{id}");
    baseline_with(&stack, &fallback, &["/etc/app.conf"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = stack.log();
        if log.contains("no container runtime knows this container") && log.contains(&id) {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "no reason logged within 10 s:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(log.contains("slow.sock"), "the slow source is named: {log}");
    assert!(
        log.contains("lying.sock"),
        "the lying source is named: {log}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the agent was not held by the runtime"
    );
}
