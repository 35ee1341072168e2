//! The contract's error reasons stay in one place: every reason the `.proto` comments name
//! (`LOCKED_OUT`, `WEBAUTHN_REJECTED`, …) is a value of `ErrorReason`, so a client generated
//! from the protos can match on all of them, and the server (which builds every `ErrorInfo`
//! from that enum) sends no other.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed unwrap is a failed test"
)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use prost::Message as _;
use tollgate_proto::v1::ErrorReason;

/// The gRPC status code names, which the comments name beside the reasons.
const CODES: &[&str] = &[
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "OUT_OF_RANGE",
    "DATA_LOSS",
    "NOT_SERVING",
];

#[test]
fn every_reason_the_comments_name_is_an_error_reason() {
    // Names that are other things: the values of the contract's other enums.
    let set = prost_types::FileDescriptorSet::decode(tollgate_proto::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set decodes");
    let mut other: BTreeSet<String> = CODES.iter().map(|code| (*code).to_owned()).collect();
    for file in &set.file {
        for enumeration in &file.enum_type {
            if enumeration.name() != "ErrorReason" {
                other.extend(
                    enumeration
                        .value
                        .iter()
                        .map(|value| value.name().to_owned()),
                );
            }
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto/tollgate/v1");
    let mut named = BTreeSet::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "proto") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let comments = text.lines().filter(|line| {
            let line = line.trim_start();
            line.starts_with("//") && !line.contains("buf:lint:")
        });
        for line in comments {
            let words =
                line.split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'));
            for word in words {
                let reason_like = word.contains('_')
                    && word.len() > 3
                    && word.starts_with(|c: char| c.is_ascii_uppercase())
                    && !word.ends_with('_');
                if reason_like && !other.contains(word) {
                    named.insert((word.to_owned(), path.file_name().unwrap().to_owned()));
                }
            }
        }
    }
    assert!(named.len() > 30, "the comments name reasons: {named:?}");
    let missing: Vec<_> = named
        .iter()
        .filter(|(word, _)| ErrorReason::from_str_name(word).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "named in comments, missing from ErrorReason: {missing:?}"
    );

    // And the other way: each reason an RPC can answer is named in the comment of at least
    // one RPC (or service), except those that any call can meet, which the enum documents.
    let anywhere = [
        "ERROR_REASON_UNSPECIFIED",
        "USER_UNAUTHENTICATED",
        "INVALID_ARGUMENT",
        "MALFORMED_REQUEST",
        "CALLER_UNAUTHENTICATED",
        "INVALID_API_KEY",
        "MISSING_SCOPE",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "CONCURRENT_CHANGE",
        "DATABASE_UNAVAILABLE",
        "CLOCK_SKEW",
        "INTERNAL",
    ];
    let in_rpc_comments: BTreeSet<&str> = named
        .iter()
        .filter(|(_, file)| file != "error_reason.proto")
        .map(|(word, _)| word.as_str())
        .collect();
    let unnamed: Vec<&str> = set
        .file
        .iter()
        .flat_map(|file| &file.enum_type)
        .filter(|enumeration| enumeration.name() == "ErrorReason")
        .flat_map(|enumeration| &enumeration.value)
        .map(prost_types::EnumValueDescriptorProto::name)
        .filter(|name| !anywhere.contains(name) && !in_rpc_comments.contains(name))
        .collect();
    assert!(unnamed.is_empty(), "no RPC comment names: {unnamed:?}");
}
