//! Reading what a container runtime knows about a container (image, name, labels) from its own
//! state files or its API socket.
//!
//! Everything here runs on the container lookup worker (`container`), never on the event loop,
//! and is bounded: files are opened `O_NOFOLLOW|O_NONBLOCK`, must be regular files and are read up
//! to [`MAX_STATE_BYTES`]; a socket gets [`SOCKET_TIMEOUT`] for the whole exchange and
//! [`MAX_STATE_BYTES`] of answer. Whatever a source says is input from whoever runs containers:
//! it names a workload but cannot block the agent, and what it says is cut to
//! [`MAX_FIELD_CHARS`].

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Largest state file or API answer read.
pub const MAX_STATE_BYTES: u64 = 4 * 1024 * 1024;
/// The whole exchange with an API socket (connect, request, answer).
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest image, name or label value kept.
pub const MAX_FIELD_CHARS: usize = 256;
/// Most containerd namespaces looked into.
const MAX_NAMESPACES: usize = 64;

/// What a runtime says about one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The image as the container was created from it (`repo:tag`, `repo@digest`, or an id).
    pub image: String,
    /// The container's name, when the runtime has one.
    pub name: Option<String>,
    /// Labels and annotations (Kubernetes' pod namespace, name... under their usual keys).
    pub labels: BTreeMap<String, String>,
}

/// Where container facts are read from (`--container-source KIND:PATH`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// containers-storage (podman, CRI-O, buildah): `<root>/*-containers/containers.json` and
    /// each container's `userdata/config.json`. Default root `/var/lib/containers/storage`.
    PodmanState(PathBuf),
    /// dockerd: `<root>/containers/<id>/config.v2.json`. Default root `/var/lib/docker`.
    DockerState(PathBuf),
    /// containerd's task bundles: `<root>/io.containerd.runtime.v2.task/<namespace>/<id>/
    /// config.json` (CRI annotations). Default root `/run/containerd`.
    ContainerdState(PathBuf),
    /// A Docker Engine API socket (dockerd, or `podman system service`): `GET
    /// /containers/<id>/json`.
    DockerApi(PathBuf),
}

impl Source {
    /// The runtimes' usual places, state files first (cheap, local), then API sockets.
    pub fn defaults() -> Vec<Source> {
        vec![
            Source::PodmanState("/var/lib/containers/storage".into()),
            Source::DockerState("/var/lib/docker".into()),
            Source::ContainerdState("/run/containerd".into()),
            Source::DockerApi("/run/docker.sock".into()),
            Source::DockerApi("/run/podman/podman.sock".into()),
        ]
    }

    fn kind(&self) -> &'static str {
        match self {
            Source::PodmanState(_) => "podman-state",
            Source::DockerState(_) => "docker-state",
            Source::ContainerdState(_) => "containerd-state",
            Source::DockerApi(_) => "docker-api",
        }
    }

    fn path(&self) -> &Path {
        match self {
            Source::PodmanState(p)
            | Source::DockerState(p)
            | Source::ContainerdState(p)
            | Source::DockerApi(p) => p,
        }
    }

    /// What this source says about container `id` (a hex id, checked by the caller).
    pub fn lookup(&self, id: &str) -> Result<ContainerInfo, String> {
        match self {
            Source::PodmanState(root) => podman_state(root, id),
            Source::DockerState(root) => docker_state(root, id),
            Source::ContainerdState(root) => containerd_state(root, id),
            Source::DockerApi(socket) => docker_api(socket, id),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind(), self.path().display())
    }
}

impl FromStr for Source {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (kind, path) = text
            .split_once(':')
            .ok_or_else(|| format!("invalid container source {text:?}: expected KIND:PATH"))?;
        let path = PathBuf::from(path);
        match kind {
            "podman-state" => Ok(Source::PodmanState(path)),
            "docker-state" => Ok(Source::DockerState(path)),
            "containerd-state" => Ok(Source::ContainerdState(path)),
            "docker-api" => Ok(Source::DockerApi(path)),
            _ => Err(format!(
                "invalid container source kind {kind:?}: expected podman-state, docker-state, \
                 containerd-state or docker-api"
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Source {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The first source that knows container `id`, or every source's reason for not knowing it.
pub fn lookup(sources: &[Source], id: &str) -> Result<(ContainerInfo, String), Vec<String>> {
    if !(12..=64).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(vec![format!("{id:?} is not a container id")]);
    }
    let mut reasons = Vec::new();
    for source in sources {
        match source.lookup(id) {
            Ok(info) if !info.image.is_empty() => return Ok((info, source.to_string())),
            Ok(_) => reasons.push(format!("{source}: no image")),
            Err(reason) => reasons.push(format!("{source}: {reason}")),
        }
    }
    Err(reasons)
}

/// Reads a regular file of at most [`MAX_STATE_BYTES`] without following a symlink or waiting on
/// a FIFO.
fn read_state(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    if meta.len() > MAX_STATE_BYTES {
        return Err(format!(
            "{}: {} bytes, more than {MAX_STATE_BYTES}",
            path.display(),
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_STATE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(bytes)
}

fn read_json(path: &Path) -> Result<Value, String> {
    serde_json::from_slice(&read_state(path)?)
        .map_err(|e| format!("{}: not JSON: {e}", path.display()))
}

/// A string field, cut to [`MAX_FIELD_CHARS`] with control characters dropped.
fn field(v: &Value) -> Option<String> {
    let s: String = v
        .as_str()?
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FIELD_CHARS)
        .collect();
    (!s.is_empty()).then_some(s)
}

/// String values of a JSON object (labels, annotations), bounded like [`field`].
fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.chars().take(MAX_FIELD_CHARS).collect(), field(v)?)))
        .take(1024)
        .collect()
}

/// CRI annotations under the Kubernetes label keys operators know (`io.kubernetes.pod.namespace`
/// ...), next to the raw ones.
fn with_kubernetes_aliases(mut labels: BTreeMap<String, String>) -> BTreeMap<String, String> {
    for (cri, k8s) in [
        (
            "io.kubernetes.cri.sandbox-namespace",
            "io.kubernetes.pod.namespace",
        ),
        ("io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"),
        (
            "io.kubernetes.cri.container-name",
            "io.kubernetes.container.name",
        ),
    ] {
        if let Some(v) = labels.get(cri).cloned() {
            labels.entry(k8s.to_owned()).or_insert(v);
        }
    }
    labels
}

/// containers-storage: the container's record in `containers.json` (names, image name in its
/// metadata) and the annotations of its OCI config.
fn podman_state(root: &Path, id: &str) -> Result<ContainerInfo, String> {
    let mut reasons = Vec::new();
    for driver in ["overlay", "vfs", "btrfs", "zfs"] {
        let dir = root.join(format!("{driver}-containers"));
        let list = match read_json(&dir.join("containers.json")) {
            Ok(list) => list,
            Err(reason) => {
                if driver == "overlay" {
                    reasons.push(reason);
                }
                continue;
            }
        };
        let Some(record) = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["id"].as_str() == Some(id))
        else {
            reasons.push(format!("{}: no container {id}", dir.display()));
            continue;
        };
        let metadata: Value = record["metadata"]
            .as_str()
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or(Value::Null);
        let image = field(&metadata["image-name"])
            .or_else(|| field(&record["image"]))
            .unwrap_or_default();
        let name = field(&record["names"][0]).or_else(|| field(&metadata["name"]));
        let labels = read_json(&dir.join(id).join("userdata/config.json"))
            .map(|c| string_map(&c["annotations"]))
            .unwrap_or_default();
        return Ok(ContainerInfo {
            image,
            name,
            labels: with_kubernetes_aliases(labels),
        });
    }
    Err(reasons.join("; "))
}

/// dockerd: `config.v2.json` holds the image as given, the name and the labels.
fn docker_state(root: &Path, id: &str) -> Result<ContainerInfo, String> {
    let config = read_json(&root.join("containers").join(id).join("config.v2.json"))?;
    Ok(ContainerInfo {
        image: field(&config["Config"]["Image"])
            .or_else(|| field(&config["Image"]))
            .unwrap_or_default(),
        name: field(&config["Name"]).map(|n| n.trim_start_matches('/').to_owned()),
        labels: string_map(&config["Config"]["Labels"]),
    })
}

/// containerd: the task bundle's OCI config, whose CRI annotations name the image, the container
/// and its pod.
fn containerd_state(root: &Path, id: &str) -> Result<ContainerInfo, String> {
    let tasks = root.join("io.containerd.runtime.v2.task");
    let namespaces = std::fs::read_dir(&tasks).map_err(|e| format!("{}: {e}", tasks.display()))?;
    for ns in namespaces.flatten().take(MAX_NAMESPACES) {
        let config = ns.path().join(id).join("config.json");
        let Ok(config) = read_json(&config) else {
            continue;
        };
        let labels = with_kubernetes_aliases(string_map(&config["annotations"]));
        return Ok(ContainerInfo {
            image: labels
                .get("io.kubernetes.cri.image-name")
                .cloned()
                .unwrap_or_default(),
            name: labels.get("io.kubernetes.container.name").cloned(),
            labels,
        });
    }
    Err(format!("{}: no task {id}", tasks.display()))
}

/// A Docker Engine API socket: `GET /containers/<id>/json` over HTTP/1.0 (no chunking, the
/// server closes), within [`SOCKET_TIMEOUT`] for the whole exchange.
fn docker_api(socket: &Path, id: &str) -> Result<ContainerInfo, String> {
    let deadline = Instant::now() + SOCKET_TIMEOUT;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer within {SOCKET_TIMEOUT:?}"))
    };
    let meta = std::fs::symlink_metadata(socket).map_err(|e| e.to_string())?;
    if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
        return Err("not a socket".to_owned());
    }
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    let request = format!("GET /containers/{id}/json HTTP/1.0\r\nHost: runtime\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.len() as u64 > MAX_STATE_BYTES {
                    return Err(format!("answer longer than {MAX_STATE_BYTES} bytes"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    }
    parse_inspect(&answer)
}

/// The image, name and labels of a `/containers/<id>/json` HTTP answer.
fn parse_inspect(answer: &[u8]) -> Result<ContainerInfo, String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        let line: String = head.lines().next().unwrap_or("").chars().take(80).collect();
        return Err(format!("answered {line:?}"));
    }
    let body: Value = serde_json::from_slice(&answer[split + 4..])
        .map_err(|e| format!("answer is not JSON: {e}"))?;
    Ok(ContainerInfo {
        // podman's answer names the image in ImageName, Docker's in Config.Image.
        image: field(&body["Config"]["Image"])
            .or_else(|| field(&body["ImageName"]))
            .unwrap_or_default(),
        name: field(&body["Name"]).map(|n| n.trim_start_matches('/').to_owned()),
        labels: with_kubernetes_aliases(string_map(&body["Config"]["Labels"])),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "8c510d380f3efdec8506c2ce92e6d04a66bbcc4cf76aa5fbcc4a1b26777bc83e";

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn podman_state_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("overlay-containers");
        write(
            &dir.join("containers.json"),
            &format!(
                r#"[{{"id":"{ID}","names":["web-1"],"image":"1d0b",
                "metadata":"{{\"image-name\":\"localhost/bb:1\",\"name\":\"web-1\"}}"}}]"#
            ),
        );
        write(
            &dir.join(ID).join("userdata/config.json"),
            r#"{"annotations":{"io.kubernetes.pod.namespace":"ns1","app":"web"}}"#,
        );
        let info = Source::PodmanState(root.path().into()).lookup(ID).unwrap();
        assert_eq!(info.image, "localhost/bb:1");
        assert_eq!(info.name.as_deref(), Some("web-1"));
        assert_eq!(info.labels["io.kubernetes.pod.namespace"], "ns1");
        let missing = Source::PodmanState(root.path().into()).lookup(&"0".repeat(64));
        assert!(missing.unwrap_err().contains("no container"));
    }

    #[test]
    fn docker_and_containerd_state_files() {
        let root = tempfile::tempdir().unwrap();
        write(
            &root.path().join(format!("containers/{ID}/config.v2.json")),
            r#"{"Name":"/api","Image":"sha256:ab","Config":{"Image":"acme/api:2",
               "Labels":{"app":"api","n":7}}}"#,
        );
        let info = Source::DockerState(root.path().into()).lookup(ID).unwrap();
        assert_eq!(info.image, "acme/api:2");
        assert_eq!(info.name.as_deref(), Some("api"));
        assert_eq!(info.labels.len(), 1, "non-string labels ignored");

        write(
            &root.path().join(format!(
                "io.containerd.runtime.v2.task/k8s.io/{ID}/config.json"
            )),
            r#"{"annotations":{"io.kubernetes.cri.image-name":"reg/app:1",
               "io.kubernetes.cri.container-name":"app",
               "io.kubernetes.cri.sandbox-namespace":"prod"}}"#,
        );
        let info = Source::ContainerdState(root.path().into())
            .lookup(ID)
            .unwrap();
        assert_eq!(info.image, "reg/app:1");
        assert_eq!(info.name.as_deref(), Some("app"));
        assert_eq!(info.labels["io.kubernetes.pod.namespace"], "prod");
    }

    #[test]
    fn hostile_state_is_refused_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("overlay-containers");
        std::fs::create_dir_all(&dir).unwrap();
        // A FIFO where the state should be: refused at once, never waited on.
        let fifo = dir.join("containers.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let start = Instant::now();
        let err = Source::PodmanState(root.path().into())
            .lookup(ID)
            .unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(1));
        // A symlink is not followed.
        std::fs::remove_file(&fifo).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &fifo).unwrap();
        let err = Source::PodmanState(root.path().into())
            .lookup(ID)
            .unwrap_err();
        assert!(!err.is_empty());
        // Not a container id: nothing is read.
        assert!(lookup(&Source::defaults(), "../../etc").is_err());
    }

    #[test]
    fn inspect_answers() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n\
            {\"Name\":\"/t2\",\"Config\":{\"Image\":\"localhost/bb:1\",\"Labels\":{\"app\":\"web\"}}}";
        let info = parse_inspect(ok).unwrap();
        assert_eq!(info.image, "localhost/bb:1");
        assert_eq!(info.name.as_deref(), Some("t2"));
        assert_eq!(info.labels["app"], "web");
        assert!(parse_inspect(b"HTTP/1.0 404 Not Found\r\n\r\n{}").is_err());
        assert!(parse_inspect(b"garbage").is_err());
        assert!(parse_inspect(b"HTTP/1.0 200 OK\r\n\r\nnot json").is_err());
    }

    #[test]
    fn sources_parse() {
        assert_eq!(
            "docker-api:/run/docker.sock".parse::<Source>().unwrap(),
            Source::DockerApi("/run/docker.sock".into())
        );
        assert!("nope:/x".parse::<Source>().is_err());
        assert!("/x".parse::<Source>().is_err());
    }
}
