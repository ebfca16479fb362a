//! The sensor agent. Data flows one way through these modules:
//!
//! `kernel` (load programs, read the ring buffer, `decode` records into [`event::Event`]) →
//! `attribute` (process tree and workload of each event) → `baseline` (what each workload
//! normally does) → `deviation` (what is new, as `sensor.v1` deviations) → `transport` (spool and
//! stream to the collector). `agent` wires them together; `cli` is the command line.

pub mod agent;
pub mod attribute;
pub mod baseline;
pub mod baseline_cli;
pub mod baseline_sync;
pub mod cli;
pub mod config;
pub mod deviation;
pub mod event;
pub mod exe_hash;
pub mod install;
pub mod kernel;
pub mod metrics;
pub mod status;
pub mod transport;
