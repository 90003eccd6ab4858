//! Generates the gRPC code from `proto/sqd/v1/*.proto` with protox (pure Rust), so building
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/sqd/v1/common.proto",
        "proto/sqd/v1/leader.proto",
        "proto/sqd/v1/admin.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
