//! How `sensor baseline` changes baselines safely while an agent may be running.
//!
//! A running agent keeps its baselines in memory and rewrites their files on its own schedule, so
//! an operator editing a file behind its back would be overwritten. Instead:
//!
//! - The agent holds an exclusive `flock` on `<state>/baseline-ops/lock` for as long as it runs
//!   ([`AgentLock`]); a second agent on the same state directory is refused.
//! - An operator command first tries that lock. When it gets it, no agent is running: it applies
//!   the change to the files itself, holding the lock meanwhile, so an agent starting at that
//!   moment waits for it.
//! - Otherwise it drops a request into `<state>/baseline-ops/requests/` (written to a temporary
//!   name, then renamed: the agent never reads half a request) and waits for the answer file
//!   the agent writes beside it after applying the change to its live baseline, which it saves
//!   at once. The agent looks for requests every second.
//!
//! Either way the change goes through the same function (`ops::change`) and is versioned.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::Baselines;
use super::ops::{self, Applied, Operation, OpsError};
use super::store::BaselineError;

/// How long an operator command waits for a running agent to answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// The state directory's lock, held by a running agent (or briefly by an operator command).
#[derive(Debug)]
pub struct AgentLock {
    _lock: Flock<File>,
}

fn lock_path(state_dir: &Path) -> PathBuf {
    ops::side_dir(&ops::baselines_dir(state_dir)).join("lock")
}

fn requests_dir(baselines: &Path) -> PathBuf {
    ops::side_dir(baselines).join("requests")
}

/// Tries the lock once: `None` when someone else holds it.
pub fn try_lock(state_dir: &Path) -> Result<Option<AgentLock>, BaselineError> {
    let path = lock_path(state_dir);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| BaselineError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| BaselineError::Lock {
            path: path.clone(),
            source,
        })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(AgentLock { _lock: lock })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(BaselineError::Lock {
            path,
            source: errno.into(),
        }),
    }
}

/// The agent's lock: waits up to `wait` (an operator command may hold it for a moment), then
/// fails with [`BaselineError::Locked`] (another agent uses this state directory).
pub fn lock_for_agent(state_dir: &Path, wait: Duration) -> Result<AgentLock, BaselineError> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(lock) = try_lock(state_dir)? {
            return Ok(lock);
        }
        if Instant::now() >= deadline {
            return Err(BaselineError::Locked {
                dir: ops::baselines_dir(state_dir),
                lock: lock_path(state_dir),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the agent answers to a request.
#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    result: Result<Applied, String>,
}

/// Applies `op` to the baselines of `state_dir`: through the running agent if there is one,
/// else directly.
pub fn perform(state_dir: &Path, op: Operation) -> Result<Applied, OpsError> {
    match try_lock(state_dir)? {
        Some(_held) => ops::apply_offline(state_dir, op),
        None => submit(state_dir, op, ANSWER_TIMEOUT),
    }
}

/// Hands `op` to the running agent and waits up to `timeout` for its answer.
fn submit(state_dir: &Path, op: Operation, timeout: Duration) -> Result<Applied, OpsError> {
    let dir = requests_dir(&ops::baselines_dir(state_dir));
    let io = |what: &str, e: std::io::Error| {
        OpsError::Request(format!("cannot {what} in {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(&dir).map_err(|e| io("create the request directory", e))?;
    let id = format!(
        "{}-{}",
        crate::event::unix_nanos(std::time::SystemTime::now()),
        std::process::id()
    );
    let request = dir.join(format!("{id}.request"));
    let answer = dir.join(format!("{id}.answer"));
    let tmp = dir.join(format!("{id}.tmp"));
    let text = serde_json::to_vec(&op).map_err(|e| io("encode the request", e.into()))?;
    std::fs::write(&tmp, text).map_err(|e| io("write a request", e))?;
    std::fs::rename(&tmp, &request).map_err(|e| io("write a request", e))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read(&answer) {
            let _ = std::fs::remove_file(&answer);
            let answer: Answer = serde_json::from_slice(&text)
                .map_err(|e| OpsError::Request(format!("unreadable answer from the agent: {e}")))?;
            return answer.result.map_err(OpsError::Request);
        }
        if Instant::now() >= deadline {
            // Withdraw it if the agent has not taken it yet, so it does not apply it later.
            let withdrawn = std::fs::remove_file(&request).is_ok();
            return Err(OpsError::Request(format!(
                "the running agent did not answer within {timeout:?}{}",
                if withdrawn {
                    "; the request was withdrawn, nothing changed"
                } else {
                    "; it took the request and may still apply it (check `sensor baseline show`)"
                }
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Baselines {
    /// Applies the operator requests waiting in the mailbox and answers each; returns how many.
    pub fn serve_requests(&mut self) -> usize {
        let dir = requests_dir(&self.dir);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return 0;
        };
        let mut pending: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "request"))
            .collect();
        pending.sort();
        for request in &pending {
            // Taking it (reading then removing) before applying: a command that timed out
            // removes it first, and then nothing is applied.
            let Ok(text) = std::fs::read(request) else {
                continue;
            };
            if std::fs::remove_file(request).is_err() {
                continue;
            }
            let result = serde_json::from_slice::<Operation>(&text)
                .map_err(|e| format!("unreadable request: {e}"))
                .and_then(|op| self.apply(op).map_err(|e| e.to_string()));
            if let Err(error) = &result {
                tracing::warn!(request = %request.display(), %error, "operator request refused");
            }
            let answer = request.with_extension("answer");
            let tmp = request.with_extension("answer.tmp");
            let text = serde_json::to_vec(&Answer { result }).unwrap_or_default();
            if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &answer))
            {
                tracing::warn!(answer = %answer.display(), error = %e, "cannot answer an operator request");
            }
        }
        pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{Behaviour, LearningConfig};

    #[test]
    fn a_running_agent_applies_requests_and_an_idle_state_dir_is_changed_directly() {
        let state = tempfile::tempdir().unwrap();
        let w = "unit:y.service".to_owned();
        // No agent: applied directly.
        let applied = perform(
            state.path(),
            Operation::Accept {
                workload: w.clone(),
                behaviours: vec![Behaviour::Executable("/bin/y".into())],
            },
        )
        .unwrap();
        assert_eq!(applied.version, 1);

        // An "agent" on another thread holding the lock and serving requests.
        let lock = lock_for_agent(state.path(), Duration::ZERO).unwrap();
        assert!(matches!(
            lock_for_agent(state.path(), Duration::from_millis(100)),
            Err(BaselineError::Locked { .. })
        ));
        let path = state.path().to_owned();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = std::sync::Arc::clone(&stop);
        let agent = std::thread::spawn(move || {
            let _lock = lock;
            let mut engine = Baselines::open(&path, LearningConfig::default()).unwrap();
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                engine.serve_requests();
                std::thread::sleep(Duration::from_millis(20));
            }
            engine.persist().unwrap();
        });
        let applied = perform(
            state.path(),
            Operation::Freeze {
                workload: w.clone(),
            },
        )
        .unwrap();
        assert_eq!(applied.version, 2);
        let refused = perform(
            state.path(),
            Operation::Reset {
                workload: "nope".into(),
            },
        )
        .unwrap_err();
        assert!(refused.to_string().contains("no baseline"), "{refused}");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        agent.join().unwrap();
        // The agent's final persist kept the operator's change.
        let s = ops::load(state.path(), &w).unwrap();
        assert_eq!((s.version, s.state()), (2, "frozen"));
    }

    #[test]
    fn an_unanswered_request_is_withdrawn() {
        let state = tempfile::tempdir().unwrap();
        let _held = lock_for_agent(state.path(), Duration::ZERO).unwrap();
        let e = submit(
            state.path(),
            Operation::Reset {
                workload: "w".into(),
            },
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(e.to_string().contains("withdrawn"), "{e}");
        let left = std::fs::read_dir(requests_dir(&ops::baselines_dir(state.path())))
            .unwrap()
            .count();
        assert_eq!(left, 0);
    }
}
