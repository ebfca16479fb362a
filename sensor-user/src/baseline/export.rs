//! The exchange format of one baseline (`sensor baseline export` / `import`): stable JSON, with
//! its own format name and version so that an import can refuse what it does not understand.
//!
//! ```json
//! {"format": "sensor-baseline", "format_version": 1, "workload": "github:acme/app/ci/build",
//!  "version": 7, "frozen": false, "learning_runs": ["101", "102"],
//!  "first_seen_unix_nanos": 1764000000000000000, "detecting_since_unix_nanos": null,
//!  "behaviours": [{"executable": "/usr/bin/make"},
//!                 {"file": {"path": "/etc/ld.so.cache", "intent": "read"}}]}
//! ```
//!
//! Behaviours are sorted, so exporting the same baseline twice gives the same bytes. Which
//! deviations were already reported is host state and is not exported.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::MAX_BEHAVIOURS_PER_DIMENSION;
use super::bounded::Learned;
use super::learned::WorkloadBaseline;
use crate::behaviour::{Behaviour, Dimension};

/// The `format` of an export.
pub const FORMAT: &str = "sensor-baseline";
/// The `format_version` written and read by this build.
pub const FORMAT_VERSION: u32 = 1;

/// One exported baseline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    pub format: String,
    pub format_version: u32,
    pub workload: String,
    /// The baseline's version when exported.
    pub version: u64,
    pub frozen: bool,
    /// The CI runs it learnt from.
    pub learning_runs: Vec<String>,
    pub first_seen_unix_nanos: Option<i64>,
    pub detecting_since_unix_nanos: Option<i64>,
    pub behaviours: Vec<Behaviour>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not JSON: {0}")]
    Json(serde_json::Error),
    #[error("not a baseline export (its \"format\" is {0:?}, expected \"{FORMAT}\")")]
    NotAnExport(String),
    #[error(
        "baseline export format version {0} is not supported: this sensor reads version \
         {FORMAT_VERSION}; export it again with this sensor's version, or upgrade this sensor"
    )]
    UnsupportedVersion(u64),
    #[error("invalid baseline export: {0}")]
    Invalid(String),
}

impl Export {
    pub(crate) fn of(workload: &str, version: u64, b: &WorkloadBaseline) -> Export {
        Export {
            format: FORMAT.to_owned(),
            format_version: FORMAT_VERSION,
            workload: workload.to_owned(),
            version,
            frozen: b.frozen,
            learning_runs: b.learning_runs.clone(),
            first_seen_unix_nanos: b.first_seen_unix_nanos,
            detecting_since_unix_nanos: b.detecting_since_unix_nanos,
            behaviours: b.learned.behaviours().iter().cloned().collect(),
        }
    }

    /// Parses and checks an export: its format and version first (with errors that say so),
    /// then every field, no unknown ones, a workload id, and the per-dimension bound.
    pub fn parse(text: &[u8]) -> Result<Export, ImportError> {
        let value: serde_json::Value = serde_json::from_slice(text).map_err(ImportError::Json)?;
        let format = value.get("format").and_then(|f| f.as_str()).unwrap_or("");
        if format != FORMAT {
            return Err(ImportError::NotAnExport(format.to_owned()));
        }
        let version = value.get("format_version").and_then(|v| v.as_u64());
        match version {
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            Some(v) => return Err(ImportError::UnsupportedVersion(v)),
            None => {
                return Err(ImportError::Invalid(
                    "\"format_version\" is missing or not a number".into(),
                ));
            }
        }
        let export: Export =
            serde_json::from_value(value).map_err(|e| ImportError::Invalid(e.to_string()))?;
        if export.workload.trim().is_empty() {
            return Err(ImportError::Invalid("\"workload\" is empty".into()));
        }
        let mut counts = [0usize; Dimension::COUNT];
        for b in &export.behaviours {
            counts[b.dimension().index()] += 1;
        }
        if let Some(i) = counts
            .iter()
            .position(|&c| c > MAX_BEHAVIOURS_PER_DIMENSION)
        {
            return Err(ImportError::Invalid(format!(
                "{} behaviours of one dimension (#{i}); a baseline holds at most {MAX_BEHAVIOURS_PER_DIMENSION}",
                counts[i]
            )));
        }
        Ok(export)
    }

    /// The export's behaviours as a set.
    pub fn behaviour_set(&self) -> BTreeSet<Behaviour> {
        self.behaviours.iter().cloned().collect()
    }

    /// Replaces `b`'s learnt state with this export's (keeping which deviations `b` reported).
    pub(crate) fn apply_to(&self, b: &mut WorkloadBaseline) {
        b.learned = Learned::from(self.behaviour_set());
        b.learning_runs = self.learning_runs.clone();
        b.first_seen_unix_nanos = self.first_seen_unix_nanos;
        b.detecting_since_unix_nanos = self.detecting_since_unix_nanos;
        b.frozen = self.frozen;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Export {
        let mut b = WorkloadBaseline::default();
        b.learning_runs.push("7".into());
        b.learned
            .learn(Behaviour::Executable("/usr/bin/make".into()), 10);
        b.learned.learn(
            Behaviour::File {
                path: "/etc/hosts".into(),
                intent: "read".parse().expect("intent"),
            },
            10,
        );
        Export::of("github:a/b/ci/build", 3, &b)
    }

    #[test]
    fn round_trips_and_is_stable() {
        let e = sample();
        let text = serde_json::to_vec_pretty(&e).unwrap();
        assert_eq!(Export::parse(&text).unwrap(), e);
        assert_eq!(serde_json::to_vec_pretty(&sample()).unwrap(), text);
        let mut b = WorkloadBaseline::default();
        e.apply_to(&mut b);
        assert_eq!(Export::of(&e.workload, 3, &b), e);
    }

    #[test]
    fn refuses_other_formats_and_versions_clearly() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["format_version"] = 2.into();
        let e = Export::parse(v.to_string().as_bytes()).unwrap_err();
        assert!(matches!(e, ImportError::UnsupportedVersion(2)), "{e}");
        assert!(e.to_string().contains("this sensor reads version 1"), "{e}");
        let e = Export::parse(br#"{"version": 1, "workload": "x"}"#).unwrap_err();
        assert!(matches!(e, ImportError::NotAnExport(_)), "{e}");
        let mut v = serde_json::to_value(sample()).unwrap();
        v["extra"] = 1.into();
        let e = Export::parse(v.to_string().as_bytes()).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = Export::parse(b"{").unwrap_err();
        assert!(matches!(e, ImportError::Json(_)), "{e}");
    }
}
