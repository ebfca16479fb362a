//! Generated types and services of the `sensor.v1` package (see `sensor/v1/collector.proto`).

/// `sensor.v1`: ingest and query services, deviations and their parts; shared baselines
/// (`sensor/v1/baseline.proto`).
pub mod v1 {
    tonic::include_proto!("sensor.v1");
}

pub mod codec;
pub mod contract;
mod names;
pub mod pages;

pub use names::{kind_from_name, kind_name};

/// Largest message of `sensor.v1` a peer sends or decodes: the contract's batch cap, 4 MiB
/// (gRPC's usual default). The agent seals its batches below it; the collector decodes nothing
/// larger on an agent's stream, so one agent cannot make it buffer tens of MiB per stream.
pub const MAX_MESSAGE_BYTES: usize = contract::MAX_BATCH_BYTES;

/// The encoded `google.protobuf.FileDescriptorSet` of every `sensor.v1` file, for gRPC server
/// reflection (so `grpcurl` and similar tools can list and call the services without the .proto).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sensor_v1_descriptor.bin"));

#[cfg(test)]
mod tests {
    use prost::Message as _;

    #[test]
    fn descriptor_set_describes_both_services() {
        let fds = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET)
            .expect("descriptor set decodes");
        let file = fds
            .file
            .iter()
            .find(|f| f.package() == "sensor.v1")
            .expect("the sensor.v1 file");
        let services: Vec<&str> = file.service.iter().map(|s| s.name()).collect();
        assert!(
            services.contains(&"Ingest") && services.contains(&"Query"),
            "{services:?}"
        );
    }
}
