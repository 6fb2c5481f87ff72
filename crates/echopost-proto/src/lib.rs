//! EchoPost's wire contract, generated from `proto/echopost/v1/echopost.proto`.
//!
//! The daemon, the client library and the tests all use these types, so there is exactly
//! one definition of the protocol. Non-Rust clients generate theirs from the same file.

/// Package `echopost.v1`: the ingest service (`EchoPost`) and the replay sink (`Sink`).
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("echopost.v1");

    /// Encoded `FileDescriptorSet` of the package, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/echopost_v1_descriptor.bin"));
}

/// The `EchoPost` service as the daemon serves it: identical on the wire, but `Append`
/// and `AppendStream` hand over each request as a [`raw::RawAppendRequest`] (records as
/// bytes, not yet decoded). Every other type is the one in [`v1`].
pub mod ingest {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    include!(concat!(env!("OUT_DIR"), "/ingest/echopost.v1.rs"));
}

pub mod raw;
