//! Builds the file descriptor set of `proto/api.proto` for gRPC reflection, so grpcurl needs no
//! proto file. The CRI Rust types themselves come from the k8s-cri crate (generated from this
//! file). NRI's messages (`proto/nri/`) are generated here with prost, without services: crisp
//! frames them over ttrpc itself (see src/nri/ttrpc.rs).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .file_descriptor_set_path(out.join("cri_descriptor.bin"))
        .compile_protos(&["proto/api.proto"], &["proto/"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .btree_map(".")
        .compile_protos(
            &["proto/nri/api.proto", "proto/nri/ttrpc.proto"],
            &["proto/nri/"],
        )?;
    println!("cargo:rerun-if-changed=proto/api.proto");
    println!("cargo:rerun-if-changed=proto/nri");
    Ok(())
}
