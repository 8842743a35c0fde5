//! Builds the file descriptor set of `proto/api.proto` for gRPC reflection, so grpcurl needs no
//! proto file. The Rust types themselves come from the k8s-cri crate (generated from this file).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .file_descriptor_set_path(out.join("cri_descriptor.bin"))
        .compile_protos(&["proto/api.proto"], &["proto/"])?;
    println!("cargo:rerun-if-changed=proto/api.proto");
    Ok(())
}
