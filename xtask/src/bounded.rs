//! Waiting on the bench's children with a limit: a peer or a load generator that hangs (a peer
//! stuck attaching or exiting, a workload stalled behind a peer's backlog) must fail one
//! measurement with a reason, never stall the whole run (CI gives the project 90 minutes).

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::bail;

/// Waits for `child` up to `limit`; past it, says what the child was doing, kills it and fails.
pub fn wait(child: &mut Child, what: &str, limit: Duration) -> anyhow::Result<ExitStatus> {
    if let Some(status) = exit_within(child, limit)? {
        return Ok(status);
    }
    let state = describe(child.id());
    let _ = child.kill();
    let reaped = match exit_within(child, KILL_GRACE) {
        Ok(Some(_)) => "killed",
        _ => "killed, but not gone after SIGKILL (uninterruptible in the kernel): left behind",
    };
    bail!("{what} did not finish within {limit:?} ({state}); {reaped}");
}

/// How long a killed child gets to be reaped. A process in uninterruptible sleep dies only when
/// the kernel lets it; waiting for it without a bound would hang the bench all the same.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// The child's exit status if it exits (and is reaped) within `limit`.
fn exit_within(child: &mut Child, limit: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM and waits up to `limit` for the child to exit, then kills it.
pub fn terminate(child: &mut Child, what: &str, limit: Duration) -> anyhow::Result<ExitStatus> {
    // SAFETY: signalling our own child, which has not been reaped (its pid is still ours).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait(child, &format!("{what} (after SIGTERM)"), limit)
}

/// The process's scheduler state and where in the kernel it waits, for the failure message.
fn describe(pid: u32) -> String {
    let read = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
    let state = read("status")
        .lines()
        .find_map(|l| l.strip_prefix("State:").map(|s| s.trim().to_owned()))
        .unwrap_or_else(|| "gone".into());
    let stack: Vec<String> = read("stack")
        .lines()
        .take(6)
        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned())
        .collect();
    format!(
        "pid {pid}, state {state}, waiting in {}, kernel stack {}",
        read("wchan"),
        stack.join(" < ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_child_past_its_limit_is_killed_with_a_reason() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let err = wait(&mut child, "sleep", Duration::from_millis(200)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sleep did not finish within"), "{text}");
        assert!(text.ends_with("; killed"), "{text}");
        assert!(text.contains(&format!("pid {pid}")), "{text}");
        // Reaped: the pid is no longer ours.
        assert!(child.try_wait().unwrap().is_some());
    }

    #[test]
    fn a_child_that_exits_in_time_gives_its_status() {
        let mut child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let status = wait(&mut child, "sh", Duration::from_secs(30)).unwrap();
        assert_eq!(status.code(), Some(3));
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let status = terminate(&mut child, "sleep", Duration::from_secs(30)).unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM)
        );
    }
}
