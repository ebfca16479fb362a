//! Generated types and services of the `sensor.v1` package (see `sensor/v1/collector.proto`).

/// `sensor.v1`: ingest and query services, deviations and their parts.
pub mod v1 {
    tonic::include_proto!("sensor.v1");
}
