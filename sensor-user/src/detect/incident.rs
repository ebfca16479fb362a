//! Incidents: the deviations of one CI run, or of one process tree of another workload, belong
//! together. An [`Incident`] has a stable id carried by each of its deviations and remembers the
//! new behaviour that gives later deviations their meaning: a credential store read, new tools,
//! an archiver run. Scoring ([`super::score`]) reads it; the engine records into it.
//!
//! Bounded: a handful of evidence entries per incident, and the engine keeps few incidents.

use proto::v1::DeviationKind;

use crate::baseline::Dimension;
use crate::behaviour::Behaviour;

use super::finding::Evidence;
use super::ids::hash_fields;

/// New executables remembered per incident.
const MAX_TOOLS: usize = 32;
/// Fresh deviation ids remembered per incident.
const MAX_FRESH: usize = 256;

/// Archivers and compressors: collecting files before sending them (MITRE T1560.001).
const ARCHIVERS: &[&str] = &[
    "tar", "zip", "7z", "7za", "7zr", "gzip", "pigz", "bzip2", "xz", "zstd", "rar", "cpio",
];

/// Whether `executable` (a path) is an archiver.
pub fn is_archiver(executable: &str) -> bool {
    let name = executable.rsplit('/').next().unwrap_or(executable);
    ARCHIVERS.contains(&name)
}

/// What one incident has shown so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Incident {
    /// Carried by every deviation of the incident (`Deviation.incident_id`).
    pub id: String,
    /// The first new credential access.
    pub credential: Option<Evidence>,
    /// The first new run of an archiver (new executable, edge or sequence ending in one).
    pub archive: Option<Evidence>,
    /// New executables (generalised paths) and their evidence.
    tools: Vec<(String, Evidence)>,
    /// Dimensions with new behaviour (bit per dimension).
    dimensions: u16,
    /// Ids of the deviations first reported in this incident (bounded).
    fresh: Vec<String>,
}

impl Incident {
    /// The incident of CI run `run_id` of `workload` on `host`.
    pub fn for_run(host: &str, workload: &str, run_id: &str) -> Incident {
        Incident::with_id(hash_fields(&[host, workload, "incident-run", run_id]))
    }

    /// The incident of the process tree rooted at `root` of `workload` on `host`, first seen at
    /// `first_nanos` (pids are reused, so the time keeps trees apart).
    pub fn for_tree(host: &str, workload: &str, root: u32, first_nanos: i64) -> Incident {
        Incident::with_id(hash_fields(&[
            host,
            workload,
            "incident-tree",
            &root.to_string(),
            &first_nanos.to_string(),
        ]))
    }

    fn with_id(id: String) -> Incident {
        Incident {
            id,
            ..Incident::default()
        }
    }

    /// Records the new `behaviour` (deviation `id`, `summary`, at `time`), `credential` when it
    /// touches a credential store.
    pub fn record(
        &mut self,
        behaviour: &Behaviour,
        credential: bool,
        evidence: impl FnOnce() -> Evidence,
    ) {
        self.dimensions |= 1 << behaviour.dimension().index();
        let new_tool = match behaviour {
            Behaviour::Executable(path) => Some(path),
            Behaviour::ExecEdge { child, .. } => Some(child),
            Behaviour::Sequence { steps, .. } => steps.last(),
            _ => None,
        };
        let archive = new_tool.is_some_and(|t| is_archiver(t)) && self.archive.is_none();
        let tool = matches!(behaviour, Behaviour::Executable(_)) && self.tools.len() < MAX_TOOLS;
        if !(credential && self.credential.is_none() || archive || tool) {
            return;
        }
        let evidence = evidence();
        if credential && self.credential.is_none() {
            self.credential = Some(evidence.clone());
        }
        if archive {
            self.archive = Some(evidence.clone());
        }
        if let (true, Some(path)) = (tool, new_tool) {
            self.tools.push((path.clone(), evidence));
        }
    }

    /// Notes that deviation `id` was first reported in this incident.
    pub fn reported(&mut self, id: &str) {
        if self.fresh.len() < MAX_FRESH {
            self.fresh.push(id.to_owned());
        }
    }

    /// Whether any of `evidence` was first reported in this incident: a chain worth reporting
    /// again, unlike one whose every link was reported in earlier incidents.
    pub fn has_fresh(&self, evidence: &[Evidence]) -> bool {
        evidence
            .iter()
            .any(|e| self.fresh.contains(&e.deviation_id))
    }

    /// Whether deviation `id` was first reported in this incident.
    pub fn is_fresh(&self, id: &str) -> bool {
        self.fresh.iter().any(|f| f == id)
    }

    /// The evidence that `executable` (generalised) is new in this incident.
    pub fn new_tool(&self, executable: &str) -> Option<&Evidence> {
        self.tools
            .iter()
            .find(|(path, _)| path == executable)
            .map(|(_, e)| e)
    }

    /// Dimensions with new behaviour so far.
    #[cfg(test)]
    pub fn breadth(&self) -> u32 {
        self.dimensions.count_ones()
    }

    /// Dimensions with new behaviour, counting `dimension` too.
    pub fn breadth_with(&self, dimension: Dimension) -> u32 {
        (self.dimensions | 1 << dimension.index()).count_ones()
    }
}

/// Evidence for a deviation of `kind`.
pub fn evidence(id: &str, kind: DeviationKind, summary: String, time: i64) -> Evidence {
    Evidence {
        deviation_id: id.to_owned(),
        kind,
        summary,
        time_unix_nanos: time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str) -> Evidence {
        evidence(id, DeviationKind::NewExecutable, id.into(), 1)
    }

    #[test]
    fn ids_are_stable_per_run_and_tree() {
        let a = Incident::for_run("h", "w", "7");
        assert_eq!(a.id, Incident::for_run("h", "w", "7").id);
        assert_ne!(a.id, Incident::for_run("h", "w", "8").id);
        assert_ne!(a.id, Incident::for_tree("h", "w", 7, 0).id);
        assert_ne!(
            Incident::for_tree("h", "w", 7, 0).id,
            Incident::for_tree("h", "w", 7, 1).id
        );
    }

    #[test]
    fn remembers_credentials_tools_and_archivers() {
        let mut i = Incident::for_run("h", "w", "1");
        let ssh = Behaviour::File {
            path: "/root/.ssh/id_rsa".into(),
            intent: "read".parse().expect("intent"),
        };
        i.record(&ssh, true, || ev("cred"));
        i.record(&ssh, true, || ev("cred-again"));
        assert_eq!(
            i.credential.as_ref().map(|e| e.deviation_id.as_str()),
            Some("cred")
        );
        i.record(&Behaviour::Executable("/usr/bin/tar".into()), false, || {
            ev("tar")
        });
        assert_eq!(
            i.archive.as_ref().map(|e| e.deviation_id.as_str()),
            Some("tar")
        );
        assert_eq!(
            i.new_tool("/usr/bin/tar").map(|e| e.deviation_id.as_str()),
            Some("tar")
        );
        assert_eq!(i.new_tool("/usr/bin/curl"), None);
        i.record(&Behaviour::DnsName("x.test".into()), false, || {
            panic!("nothing to remember")
        });
        assert_eq!(i.breadth(), 3);
        assert!(is_archiver("/usr/bin/zstd"));
        assert!(!is_archiver("/usr/bin/tarot"));
    }
}
