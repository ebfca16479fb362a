//! What is counted per one-minute window (event time): the rates whose peak a baseline learns
//! (`profile.peaks`). The windows themselves, and spikes against the peaks, are `detect`'s.

use serde::{Deserialize, Serialize};

use crate::event::{EventKind, FileOperation};

/// Window length.
pub const WINDOW_SECONDS: u32 = 60;

/// What is counted per window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RateDim {
    Exec,
    FileOpen,
    FileWrite,
    Connect,
    DnsQuery,
    Privilege,
    FileOperation,
}

impl RateDim {
    pub const COUNT: usize = 7;

    /// The rates an event counts in (an open for writing counts as open and as write).
    pub fn of(kind: &EventKind) -> (Option<RateDim>, Option<RateDim>) {
        match kind {
            EventKind::Exec { .. } => (Some(RateDim::Exec), None),
            EventKind::Open { intent, .. } => (
                Some(RateDim::FileOpen),
                (intent.write || intent.create || intent.truncate).then_some(RateDim::FileWrite),
            ),
            EventKind::Connect { .. } => (Some(RateDim::Connect), None),
            EventKind::Dns {
                response: false, ..
            } => (Some(RateDim::DnsQuery), None),
            EventKind::Privilege { .. } => (Some(RateDim::Privilege), None),
            EventKind::FileOp(
                FileOperation::Chmod { .. }
                | FileOperation::Chown { .. }
                | FileOperation::Unlink { .. }
                | FileOperation::Rename { .. }
                | FileOperation::Link { .. }
                | FileOperation::Symlink { .. },
            ) => (Some(RateDim::FileOperation), None),
            _ => (None, None),
        }
    }

    /// As in the proto's `Rate.dimension`.
    pub fn as_str(self) -> &'static str {
        match self {
            RateDim::Exec => "exec",
            RateDim::FileOpen => "file-open",
            RateDim::FileWrite => "file-write",
            RateDim::Connect => "connect",
            RateDim::DnsQuery => "dns-query",
            RateDim::Privilege => "privilege",
            RateDim::FileOperation => "file-operation",
        }
    }

    /// Outbound volume (requests leaving the host) rather than local activity.
    pub fn outbound(self) -> bool {
        matches!(self, RateDim::Connect | RateDim::DnsQuery)
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub const ALL: [RateDim; RateDim::COUNT] = [
        RateDim::Exec,
        RateDim::FileOpen,
        RateDim::FileWrite,
        RateDim::Connect,
        RateDim::DnsQuery,
        RateDim::Privilege,
        RateDim::FileOperation,
    ];
}
