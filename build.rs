//! Generates the gRPC code from `proto/sqd/v1/*.proto` with protox (pure Rust), so building
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/sqd/v1/common.proto",
        "proto/sqd/v1/leader.proto",
        "proto/sqd/v1/shard.proto",
        "proto/sqd/v1/admin.proto",
        "proto/sqd/v1/discovery.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    // Small initial stream buffers: a leader holds one session stream per node (src/codec.rs).
    tonic_prost_build::configure()
        .codec_path("crate::codec::SmallBufferCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
