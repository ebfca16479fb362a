//! What is new, as `sensor.v1` deviations.
//!
//! The baseline engine ([`crate::baseline::Engine`]) decides *that* a behaviour is new;
//! this module decides how much it matters ([`severity`]) and builds the
//! `proto::v1::Deviation` that reports it ([`report`], the only place that builds one).

pub mod report;
mod severity;

pub use report::{cardinality_id, deviation_id, deviation_kind};
pub use severity::{SecretPaths, severity};
