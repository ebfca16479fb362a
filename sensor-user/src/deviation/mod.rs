//! What is new, as `sensor.v1` deviations.
//!
//! The baseline engine ([`crate::baseline::Engine`]) decides *that* a behaviour is new;
//! this module decides how much it matters ([`severity`]) and builds the
//! `proto::v1::Deviation` that reports it ([`report`], the only place that builds one from a
//! behaviour; [`findings`] builds the window findings). [`score`] weighs each deviation in its
//! context, which [`incident`] keeps per CI run or process tree; [`tags`] names the framework
//! techniques; [`budget`] aggregates what goes past a workload's budget.

pub mod budget;
pub mod findings;
pub mod identity;
pub mod incident;
pub mod report;
pub mod score;
pub(crate) mod severity;
pub mod tags;

pub use report::{cardinality_id, deviation_id, deviation_kind};
pub use severity::{SecretPaths, is_credential_access, severity};
