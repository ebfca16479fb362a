//! Container identity that outlives a container.
//!
//! A container id lives for one container; its image (and, if configured, its name or some of
//! its labels) lives on. So a container's workload is `container:<image>[/<name or labels>]`,
//! read from the runtime's own state ([`container_runtime`](super::container_runtime)), joined on
//! the container id that the cgroup path gives; the id is kept as evidence
//! ([`Context::container_id`](super::Context::container_id)). Two containers of one image share
//! one baseline, and a restarted or re-created container is judged against what its predecessors
//! learnt.
//!
//! Lookups run on a worker thread, one at a time, each bounded by the sources' own limits. The
//! event loop waits at most [`FIRST_WAIT`] for the first lookup of a container (so its first
//! exec is already named by image), and not at all while the runtime has recently been slow;
//! until an answer arrives, and when no source knows the container, it keeps the cgroup's
//! `container:<id>` workload and logs why.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use super::container_runtime::{self, ContainerInfo, Source};
use super::workload::{Workload, WorkloadKind};

/// Longest wait of the event loop for the first lookup of a container (a state file read takes
/// well under a millisecond; the margin is for a loaded host's scheduling).
pub const FIRST_WAIT: Duration = Duration::from_millis(100);
/// After a lookup missed [`FIRST_WAIT`], the event loop does not wait for this long.
const SLOW_RUNTIME_BACKOFF: Duration = Duration::from_secs(10);
/// A container no source knew is looked up again after this long.
const RETRY_UNKNOWN: Duration = Duration::from_secs(30);
/// Lookups waiting for the worker; past this, new containers keep their id until there is room.
const QUEUE: usize = 64;
/// Containers remembered; past this, the table is cleared (ids are looked up again).
const MAX_CONTAINERS: usize = 16_384;

/// How a container's workload is named (`--container-identity`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ContainerNaming {
    /// `container:<image>`: every container of an image shares one baseline.
    #[default]
    Image,
    /// `container:<image>/<name>`: containers of one image told apart by name (compose
    /// services, named service containers).
    ImageAndName,
    /// `container:<image>/<value>/<value>...`: by the values of these label keys, e.g.
    /// `io.kubernetes.pod.namespace` and `app` (a missing label is `-`).
    ImageAndLabels(Vec<String>),
}

impl FromStr for ContainerNaming {
    type Err = String;
    /// `image`, `image+name` or `image+label:KEY[,KEY...]`.
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "image" => Ok(ContainerNaming::Image),
            "image+name" => Ok(ContainerNaming::ImageAndName),
            _ => {
                let keys: Vec<String> = text
                    .strip_prefix("image+label:")
                    .ok_or_else(|| {
                        format!(
                            "invalid container identity {text:?}: expected image, image+name or \
                             image+label:KEY[,KEY...]"
                        )
                    })?
                    .split(',')
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect();
                if keys.is_empty() {
                    return Err(format!("invalid container identity {text:?}: no label key"));
                }
                Ok(ContainerNaming::ImageAndLabels(keys))
            }
        }
    }
}

impl ContainerNaming {
    /// The workload id of a container the runtime describes as `info`.
    pub fn workload_id(&self, info: &ContainerInfo) -> String {
        let mut id = format!("container:{}", info.image);
        match self {
            ContainerNaming::Image => {}
            ContainerNaming::ImageAndName => {
                if let Some(name) = &info.name {
                    id.push('/');
                    id.push_str(name);
                }
            }
            ContainerNaming::ImageAndLabels(keys) => {
                for key in keys {
                    id.push('/');
                    id.push_str(info.labels.get(key).map_or("-", String::as_str));
                }
            }
        }
        id
    }
}

/// Where and how containers are named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerConfig {
    pub naming: ContainerNaming,
    /// Asked in order; the first that knows the container names it.
    pub sources: Vec<Source>,
}

impl ContainerConfig {
    /// `sources` empty: [`Source::defaults`].
    pub fn new(naming: ContainerNaming, sources: Vec<Source>) -> Self {
        let sources = if sources.is_empty() {
            Source::defaults()
        } else {
            sources
        };
        ContainerConfig { naming, sources }
    }
}

impl<'de> serde::Deserialize<'de> for ContainerNaming {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Default for ContainerConfig {
    fn default() -> Self {
        ContainerConfig {
            naming: ContainerNaming::default(),
            sources: Source::defaults(),
        }
    }
}

/// What the agent knows about one container id.
#[derive(Debug)]
enum Known {
    /// Named by the runtime: the workload.
    Named(Arc<Workload>),
    /// Asked, no answer yet.
    Pending,
    /// No source knew it (reasons logged) at this time.
    Unknown(Instant),
}

type Answer = (String, Result<(ContainerInfo, String), Vec<String>>);

/// Container id → workload, with the lookup worker; see the module documentation.
#[derive(Debug)]
pub(crate) struct ContainerIdentities {
    config: ContainerConfig,
    known: HashMap<String, Known>,
    worker: Option<(SyncSender<String>, Receiver<Answer>)>,
    /// Lookups asked and not answered yet: answers are collected on every event, and with none
    /// outstanding (nearly always) the channel is not polled.
    unanswered: usize,
    /// Until when the event loop does not wait for lookups (the runtime was slow).
    no_wait_until: Option<Instant>,
}

impl ContainerIdentities {
    pub(crate) fn new(config: ContainerConfig) -> Self {
        ContainerIdentities {
            config,
            known: HashMap::new(),
            worker: None,
            unanswered: 0,
            no_wait_until: None,
        }
    }

    /// Starts the lookup worker now rather than at the first container (the agent does, so the
    /// first container's lookup does not pay for a thread start).
    pub(crate) fn start(mut self) -> Self {
        self.worker = Some(start_worker(&self.config));
        self
    }

    /// The workload of the container `raw` (`container:<id>` from its cgroup) names, and its id
    /// as evidence; `raw` itself while the runtime has not named it.
    pub(crate) fn name(&mut self, raw: Arc<Workload>) -> (Arc<Workload>, Option<String>) {
        // Answers are taken on every event, so they are recorded (and their reasons logged)
        // even when the container made no further event.
        self.collect_answers();
        let Some(id) = raw.id.strip_prefix("container:") else {
            // Most events: no container, the workload goes on as it came (no copy).
            return (raw, None);
        };
        let id = id.to_owned();
        let ask = match self.known.get(&id) {
            Some(Known::Named(w)) => return (w.clone(), Some(id)),
            Some(Known::Pending) => false,
            Some(Known::Unknown(at)) => at.elapsed() >= RETRY_UNKNOWN,
            None => true,
        };
        if ask && self.ask(&id) {
            self.wait_for(&id);
            if let Some(Known::Named(w)) = self.known.get(&id) {
                return (w.clone(), Some(id));
            }
        }
        (raw, Some(id))
    }

    /// Queues a lookup of `id`; false when the worker cannot take it now.
    fn ask(&mut self, id: &str) -> bool {
        if self.known.len() >= MAX_CONTAINERS {
            self.known.clear();
        }
        let (tx, _) = self
            .worker
            .get_or_insert_with(|| start_worker(&self.config));
        match tx.try_send(id.to_owned()) {
            Ok(()) => {
                self.unanswered += 1;
                self.known.insert(id.to_owned(), Known::Pending);
                true
            }
            Err(TrySendError::Full(_)) => {
                tracing::warn!(
                    container = id,
                    "container lookups queued past {QUEUE}; keeping the container id for now"
                );
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!("the container lookup worker stopped; containers keep their ids");
                self.known
                    .insert(id.to_owned(), Known::Unknown(Instant::now()));
                false
            }
        }
    }

    /// Waits up to [`FIRST_WAIT`] for the answer about `id`, unless the runtime was slow lately.
    fn wait_for(&mut self, id: &str) {
        if self.no_wait_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let deadline = Instant::now() + FIRST_WAIT;
        while matches!(self.known.get(id), Some(Known::Pending)) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            let Some((_, rx)) = &self.worker else { return };
            match rx.recv_timeout(left) {
                Ok(answer) => self.record(answer),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        if matches!(self.known.get(id), Some(Known::Pending)) {
            tracing::warn!(
                container = id,
                wait = ?FIRST_WAIT,
                "the container runtime did not answer in time; the container keeps its id \
                 until it does"
            );
            self.no_wait_until = Some(Instant::now() + SLOW_RUNTIME_BACKOFF);
        }
    }

    fn collect_answers(&mut self) {
        if self.unanswered == 0 {
            return;
        }
        let Some((_, rx)) = &self.worker else { return };
        let answers: Vec<Answer> = rx.try_iter().collect();
        for answer in answers {
            self.record(answer);
        }
    }

    fn record(&mut self, (id, answer): Answer) {
        self.unanswered = self.unanswered.saturating_sub(1);
        let known = match answer {
            Ok((info, source)) => {
                let workload = Workload::new(
                    WorkloadKind::Container,
                    self.config.naming.workload_id(&info),
                );
                tracing::info!(container = %id, workload = %workload.id, %source, "container named");
                Known::Named(Arc::new(workload))
            }
            Err(reasons) => {
                tracing::warn!(
                    container = %id,
                    reasons = %reasons.join("; "),
                    "no container runtime knows this container; it keeps its id as workload"
                );
                Known::Unknown(Instant::now())
            }
        };
        self.known.insert(id, known);
    }
}

/// The worker: answers lookups one at a time, until the identities are dropped.
fn start_worker(config: &ContainerConfig) -> (SyncSender<String>, Receiver<Answer>) {
    let (ask_tx, ask_rx) = std::sync::mpsc::sync_channel::<String>(QUEUE);
    let (answer_tx, answer_rx) = std::sync::mpsc::channel();
    let sources = config.sources.clone();
    let spawned = std::thread::Builder::new()
        .name("container-lookup".into())
        .spawn(move || {
            for id in ask_rx {
                let answer = container_runtime::lookup(&sources, &id);
                if answer_tx.send((id, answer)).is_err() {
                    return;
                }
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the container lookup worker");
    }
    (ask_tx, answer_rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ContainerInfo {
        ContainerInfo {
            image: "localhost/app:1".into(),
            name: Some("web-1".into()),
            labels: [("app".to_owned(), "web".to_owned())].into(),
        }
    }

    #[test]
    fn naming() {
        assert_eq!(
            ContainerNaming::Image.workload_id(&info()),
            "container:localhost/app:1"
        );
        assert_eq!(
            ContainerNaming::ImageAndName.workload_id(&info()),
            "container:localhost/app:1/web-1"
        );
        let by_labels: ContainerNaming = "image+label:io.kubernetes.pod.namespace,app"
            .parse()
            .unwrap();
        assert_eq!(
            by_labels.workload_id(&info()),
            "container:localhost/app:1/-/web"
        );
        assert!("label:".parse::<ContainerNaming>().is_err());
        assert!("image+label:".parse::<ContainerNaming>().is_err());
    }

    #[test]
    fn state_files_name_the_container_and_unknown_ids_stay() {
        let root = tempfile::tempdir().unwrap();
        let id = "ab".repeat(32);
        let dir = root.path().join("overlay-containers");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("containers.json"),
            format!(r#"[{{"id":"{id}","names":["n"],"metadata":"{{\"image-name\":\"img:2\"}}"}}]"#),
        )
        .unwrap();
        let mut ids = ContainerIdentities::new(ContainerConfig {
            naming: ContainerNaming::Image,
            sources: vec![Source::PodmanState(root.path().into())],
        });
        let raw = Arc::new(Workload::new(
            WorkloadKind::Container,
            format!("container:{id}"),
        ));
        let (named, evidence) = ids.name(raw.clone());
        assert_eq!(named.id, "container:img:2");
        assert_eq!(evidence.as_deref(), Some(id.as_str()));
        let other = Arc::new(Workload::new(
            WorkloadKind::Container,
            format!("container:{}", "cd".repeat(32)),
        ));
        // The worker answers within FIRST_WAIT here (local files): unknown, so the id stays.
        assert_eq!(ids.name(other.clone()).0, other);
        let unit = Arc::new(Workload::new(
            WorkloadKind::SystemdUnit,
            "unit:a.service".into(),
        ));
        assert_eq!(ids.name(unit.clone()), (unit.clone(), None));
    }

    #[test]
    fn a_socket_that_never_answers_does_not_hold_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("slow.sock");
        // Accepts (the kernel's backlog does) and never answers.
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let mut ids = ContainerIdentities::new(ContainerConfig {
            naming: ContainerNaming::Image,
            sources: vec![Source::DockerApi(socket)],
        });
        let raw = Arc::new(Workload::new(
            WorkloadKind::Container,
            format!("container:{}", "ef".repeat(32)),
        ));
        let start = Instant::now();
        assert_eq!(ids.name(raw.clone()).0, raw);
        assert!(start.elapsed() < Duration::from_millis(500));
        // Meanwhile: no waiting at all.
        let second = Arc::new(Workload::new(
            WorkloadKind::Container,
            format!("container:{}", "12".repeat(32)),
        ));
        let start = Instant::now();
        assert_eq!(ids.name(second.clone()).0, second);
        assert!(start.elapsed() < FIRST_WAIT);
    }
}
