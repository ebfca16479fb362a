//! Compiles `sensor/v1/*.proto` with protox (pure Rust), so no `protoc` is needed on the machine,
//! and writes the encoded `FileDescriptorSet` that gRPC server reflection serves.

use prost::Message as _;

fn main() -> anyhow::Result<()> {
    let files = ["sensor/v1/collector.proto", "sensor/v1/baseline.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("sensor_v1_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    // Services decode each message from one slice (`src/codec.rs`).
    tonic_prost_build::configure()
        .codec_path("crate::codec::SliceCodec")
        .compile_fds(fds)?;
    Ok(())
}
