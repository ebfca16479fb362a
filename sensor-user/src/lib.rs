//! The sensor agent. Data flows one way through these modules:
//!
//! ```text
//! kernel → event → attribute → behaviour ← baseline ← detect → report → transport
//! ```
//!
//! `kernel` loads the programs, reads the ring buffers and decodes records into [`event::Event`]s;
//! `attribute` finds each event's process tree and workload; `behaviour` names what the event
//! shows as typed behaviours; `baseline` holds what each workload normally does (state, learning,
//! persistence); `detect` learns or judges each event against it and returns findings; `report`
//! turns findings into `sensor.v1` deviations; `transport` spools and streams them to the
//! collector. `agent` wires them together; `cli` is the command line. No module imports one
//! downstream of it (checked by `flow_tests`). See docs/architecture.md.

pub mod agent;
pub mod attribute;
pub mod baseline;
pub mod baseline_cli;
pub mod baseline_sync;
pub mod behaviour;
pub mod cli;
pub mod config;
pub mod detect;
pub mod event;
pub mod install;
pub mod kernel;
pub mod metrics;
pub mod report;
pub mod status;
pub mod transport;

#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod pipeline_tests;
