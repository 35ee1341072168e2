//! The `tollgate.v1` gRPC contract, generated from `proto/tollgate/v1/*.proto`: messages,
//! clients (`*_client`) and servers (`*_server`), shared by the server, the tests and any
//! client tool.

/// The `tollgate.v1` package.
pub mod v1 {
    #![allow(
        missing_docs,
        unreachable_pub,
        unused_qualifications,
        clippy::all,
        clippy::pedantic,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_lossless,
        clippy::semicolon_if_nothing_returned,
        clippy::uninlined_format_args,
        clippy::needless_pass_by_value,
        clippy::clone_on_ref_ptr,
        clippy::str_to_string,
        clippy::implicit_clone,
        clippy::manual_let_else,
        clippy::redundant_else,
        rust_2018_idioms,
        reason = "generated code"
    )]
    tonic::include_proto!("tollgate.v1");
}

/// The encoded `FileDescriptorSet` of the contract, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tollgate_descriptor.bin"));
