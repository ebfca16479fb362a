//! Compiles `sensor/v1/*.proto` with protox (pure Rust), so no `protoc` is needed on the machine.

fn main() -> anyhow::Result<()> {
    let files = ["sensor/v1/collector.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
