//! What detection hands to reports: one [`Finding`] per future deviation, with its [`Verdict`]
//! (id, severity, score, [`Signal`]s, related evidence, incident, tags). Everything is decided
//! here; `report` only puts it into words and proto messages.

use std::fmt;
use std::sync::Arc;

use proto::v1::{DeviationKind, Severity};

use crate::attribute::{Attributed, ClaimSource, IdentityClaim};
use crate::baseline::Dimension;
use crate::behaviour::Behaviour;

use super::ids::deviation_kind;
use super::loading::Loaded;
use super::rates::{Enumerated, Spike};

/// One thing worth reporting.
#[derive(Clone, Debug, PartialEq)]
pub enum Finding {
    /// A behaviour new to the workload's baseline.
    Novel {
        behaviour: Behaviour,
        verdict: Verdict,
    },
    /// The workload went past the bound of a dimension, while `learning` or judged.
    Cardinality {
        dimension: Dimension,
        limit: usize,
        learning: bool,
        verdict: Verdict,
    },
    /// Events of one rate past the learnt envelope in a window.
    RateSpike { spike: Spike, verdict: Verdict },
    /// Many distinct new objects of one dimension in a window.
    Enumeration {
        enumerated: Enumerated,
        verdict: Verdict,
    },
    /// The kernel lost `lost` records (all workloads together) while this workload's run (or
    /// hour) was active: part of what it did was not seen.
    BlindSpot { lost: u64, verdict: Verdict },
    /// `count` findings of `kind` past the run's budget; the first few kept as samples.
    Aggregate {
        kind: DeviationKind,
        count: u64,
        samples: Vec<Finding>,
        verdict: Verdict,
    },
    /// A process claimed a workload its lineage does not give it (see `attribute::lineage`);
    /// it stays in the event's workload.
    IdentitySwitch {
        claim: IdentityClaim,
        verdict: Verdict,
    },
}

/// What detection decided about a finding.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// Stable deviation id (see `ids`).
    pub id: String,
    /// The event that showed it (the first sample's, for an aggregate).
    pub event: Arc<Attributed>,
    pub severity: Severity,
    /// 0-100 (see `score`).
    pub score: u32,
    pub signals: Vec<Signal>,
    /// Earlier findings of the incident that gave this one its meaning.
    pub related: Vec<Evidence>,
    pub incident_id: String,
    /// Framework tags, `scheme:id` (see `tags`).
    pub tags: Vec<&'static str>,
    /// A new executable's loading reads (see `loading`), attached before it is sent.
    pub loaded: Option<Loaded>,
}

/// An earlier finding of the same incident, as later findings cite it.
#[derive(Clone, Debug, PartialEq)]
pub struct Evidence {
    pub deviation_id: String,
    pub kind: DeviationKind,
    pub summary: String,
    pub time_unix_nanos: i64,
}

/// Context said next to a finding; on the wire as `Deviation.signals` strings (see
/// [`Signal::fmt`]), which stay as they were when these were strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// The executable was written by the same workload before it ran.
    DroppedThenExecuted,
    /// The executable has no file (memfd, deleted).
    Fileless,
    /// It touches a credential store.
    Credential,
    /// A write that makes code run later.
    Persistence,
    StableDimension,
    UnstableDimension,
    AfterCredentialAccess,
    NewToolToNewHost,
    AfterArchive,
    /// A destination not from a name the workload resolved.
    NoDns,
    /// A destination from a DNS name the baseline knows.
    KnownName,
    OutputTampering,
    InputTampering,
    /// euid 0 with a non-zero uid.
    Privileged,
    /// The incident deviated in this many dimensions.
    Breadth(u32),
    /// Reported before, reported again because this incident's chain makes it severe.
    Escalated,
    /// The kernel lost records shortly before: evidence that would qualify it may be missing.
    OverlappedLoss,
    /// The executable's content hash could not be taken, and why.
    ExecutableNotHashed(HashGaveUp),
    /// Reported before and not accepted: reported again in this run (or hour), the first time
    /// it recurs there; the number of earlier runs it was reported in.
    Recurring(u32),
    /// How an identity switch was claimed.
    ClaimedBy(ClaimSource),
    /// A credential store reached under another name (a hard link, a moved copy): the event's
    /// path is that name, the behaviour names the store (same device + inode).
    ViaLink,
}

/// Why an executable was not hashed (the agent never blocks on a file a process controls).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashGaveUp {
    /// The process is gone and no file identity was captured at its exec.
    ProcessGone,
    /// What is at the path is a symbolic link (not followed).
    Symlink,
    /// What is at the path is not a regular file (FIFO, device, socket, directory).
    NotRegular,
    /// The path no longer holds the file the process executed (replaced, moved or removed).
    Replaced,
    /// Larger than the agent reads.
    TooLarge,
    /// Reading took longer than the agent waits.
    Timeout,
    /// The hashing queue was full.
    Busy,
    /// It could not be opened or read.
    Unreadable,
}

impl HashGaveUp {
    pub fn as_str(self) -> &'static str {
        match self {
            HashGaveUp::ProcessGone => "process-gone",
            HashGaveUp::Symlink => "symlink",
            HashGaveUp::NotRegular => "not-regular-file",
            HashGaveUp::Replaced => "replaced",
            HashGaveUp::TooLarge => "too-large",
            HashGaveUp::Timeout => "timeout",
            HashGaveUp::Busy => "busy",
            HashGaveUp::Unreadable => "unreadable",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Signal::DroppedThenExecuted => "dropped-then-executed",
            Signal::Fileless => "fileless",
            Signal::Credential => "credential",
            Signal::Persistence => "persistence",
            Signal::StableDimension => "stable-dimension",
            Signal::UnstableDimension => "unstable-dimension",
            Signal::AfterCredentialAccess => "after-credential-access",
            Signal::NewToolToNewHost => "new-tool-to-new-host",
            Signal::AfterArchive => "after-archive",
            Signal::NoDns => "no-dns",
            Signal::KnownName => "known-name",
            Signal::OutputTampering => "output-tampering",
            Signal::InputTampering => "input-tampering",
            Signal::Privileged => "privileged",
            Signal::Breadth(n) => return write!(f, "breadth:{n}"),
            Signal::Escalated => "escalated",
            Signal::OverlappedLoss => "overlapped-loss",
            Signal::ExecutableNotHashed(why) => {
                return write!(f, "executable-not-hashed:{}", why.as_str());
            }
            Signal::Recurring(n) => return write!(f, "recurring:{n}"),
            Signal::ClaimedBy(source) => return write!(f, "claimed-by-{}", source.as_str()),
            Signal::ViaLink => "via-link",
        };
        f.write_str(name)
    }
}

impl Finding {
    pub fn verdict(&self) -> &Verdict {
        match self {
            Finding::Novel { verdict, .. }
            | Finding::Cardinality { verdict, .. }
            | Finding::RateSpike { verdict, .. }
            | Finding::Enumeration { verdict, .. }
            | Finding::BlindSpot { verdict, .. }
            | Finding::Aggregate { verdict, .. }
            | Finding::IdentitySwitch { verdict, .. } => verdict,
        }
    }

    pub fn verdict_mut(&mut self) -> &mut Verdict {
        match self {
            Finding::Novel { verdict, .. }
            | Finding::Cardinality { verdict, .. }
            | Finding::RateSpike { verdict, .. }
            | Finding::Enumeration { verdict, .. }
            | Finding::BlindSpot { verdict, .. }
            | Finding::Aggregate { verdict, .. }
            | Finding::IdentitySwitch { verdict, .. } => verdict,
        }
    }

    /// The deviation kind that reports it.
    pub fn kind(&self) -> DeviationKind {
        match self {
            Finding::Novel { behaviour, .. } => deviation_kind(behaviour),
            Finding::Cardinality { .. } => DeviationKind::CardinalityExploded,
            Finding::RateSpike { .. } => DeviationKind::RateSpike,
            Finding::Enumeration { .. } => DeviationKind::Enumeration,
            Finding::Aggregate { .. } => DeviationKind::Aggregated,
            Finding::BlindSpot { .. } => DeviationKind::BlindSpot,
            Finding::IdentitySwitch { .. } => DeviationKind::IdentitySwitch,
        }
    }

    /// Event time, ns since the epoch.
    pub fn time_unix_nanos(&self) -> i64 {
        crate::event::unix_nanos(self.verdict().event.event.time)
    }
}
