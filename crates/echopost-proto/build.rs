//! Generates the `echopost.v1` types and services from `proto/` with protox (a pure-Rust
//! protobuf compiler), so a fresh machine needs no `protoc`.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let proto = root.join("echopost/v1/echopost.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let fds = protox::compile([&proto], [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("echopost_v1_descriptor.bin"), fds.encode_to_vec())?;
    // The daemon's ingest server: the same `EchoPost` service, except that an
    // `AppendRequest` arrives as `raw::RawAppendRequest` (each record's bytes, not yet
    // decoded) so the daemon can check and store records without decoding them into
    // owned fields. Everything else refers to the types generated below.
    let mut ingest = fds.clone();
    for file in &mut ingest.file {
        file.message_type.clear();
        file.enum_type.clear();
        file.service.retain(|s| s.name() == "EchoPost");
    }
    let ingest_out = out.join("ingest");
    std::fs::create_dir_all(&ingest_out)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .out_dir(&ingest_out)
        .extern_path(".echopost.v1.AppendRequest", "crate::raw::RawAppendRequest")
        .extern_path(".echopost.v1", "crate::v1")
        .compile_fds(ingest)?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
