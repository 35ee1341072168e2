//! Every RPC of the contract, read from its descriptor set (so a new RPC or field is covered
//! without editing this file), called with bad input on both engines: an empty request,
//! each string field empty, huge, with NUL and control characters, not UTF-8, unicode;
//! numbers at their extremes; unknown enum values; garbage bodies; bogus and oversized
//! metadata. No answer may be INTERNAL or UNKNOWN or take more than a few seconds, a call
//! refused as INVALID_ARGUMENT writes nothing, and the server is SERVING afterwards.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stderr,
    reason = "test code: a panic is a failed test"
)]

use std::time::{Duration, Instant};

use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint};
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use sea_orm::{ConnectionTrait as _, Statement};
use storage::sea_orm;
use tollgate_e2e::{Backend, TestServer, both, call_raw, password_login, reason, violated_fields};
use tollgate_proto::v1;
use tonic::Code;
use tonic::metadata::AsciiMetadataValue;

/// One bad request: what it is, its body, and metadata to add.
#[derive(Debug)]
struct Case {
    what: String,
    body: Vec<u8>,
    metadata: Vec<(&'static str, Vec<u8>)>,
    /// Sent with the user's session as `authorization: Bearer`, so that the fields are
    /// reached past the token check.
    with_session: bool,
    expect: Expect,
}

fn descriptors() -> FileDescriptorSet {
    FileDescriptorSet::decode(tollgate_proto::FILE_DESCRIPTOR_SET).unwrap()
}

fn message<'a>(set: &'a FileDescriptorSet, full_name: &str) -> Option<&'a DescriptorProto> {
    let name = full_name.strip_prefix(".tollgate.v1.")?;
    set.file
        .iter()
        .filter(|f| f.package() == "tollgate.v1")
        .flat_map(|f| &f.message_type)
        .find(|m| m.name() == name)
}

fn length_delimited(number: i32, bytes: &[u8], buf: &mut Vec<u8>) {
    encode_key(
        u32::try_from(number).unwrap(),
        WireType::LengthDelimited,
        buf,
    );
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

fn varint(number: i32, value: u64, buf: &mut Vec<u8>) {
    encode_key(u32::try_from(number).unwrap(), WireType::Varint, buf);
    encode_varint(value, buf);
}

/// What the server must answer a case with, beyond "no INTERNAL, no UNKNOWN".
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// Whatever the handler decides.
    Anything,
    /// INVALID_ARGUMENT with a `BadRequest` violation naming this field path.
    Violation(String),
    /// INVALID_ARGUMENT with the reason `MALFORMED_REQUEST`.
    Malformed,
}

/// Strings a field gets, one at a time: (what, bytes, whether the text check refuses it).
fn bad_strings() -> Vec<(&'static str, Vec<u8>, Option<bool>)> {
    vec![
        ("empty", Vec::new(), Some(false)),
        ("huge (100 KiB)", vec![b'a'; 100 * 1024], Some(true)),
        ("long (10 KiB)", vec![b'a'; 10 * 1024], Some(false)),
        ("NUL", b"n\0@example.com".to_vec(), Some(true)),
        ("control character", b"a\x01b\x1b[31m".to_vec(), Some(true)),
        ("DEL", b"x\x7f".to_vec(), Some(true)),
        ("not UTF-8", vec![0xff, 0xfe, b'a'], None),
        (
            "unicode",
            "名前 ✓ ünïcødé \u{202e}".as_bytes().to_vec(),
            Some(false),
        ),
    ]
}

/// One value of a field: what it is, its encoding (key included), and the answer it needs.
#[derive(Debug)]
struct Value {
    what: String,
    bytes: Vec<u8>,
    expect: Expect,
}

/// The values a field gets, one at a time. Message fields get every value of each of their
/// own fields (two levels down), and an empty message.
fn values(set: &FileDescriptorSet, field: &FieldDescriptorProto, depth: usize) -> Vec<Value> {
    let number = field.number();
    // The path the server names: `kinds[0]` for a list's only element.
    let path = if field.label() == prost_types::field_descriptor_proto::Label::Repeated {
        format!("{}[0]", field.name())
    } else {
        field.name().to_owned()
    };
    let mut out = Vec::new();
    let mut encoded = |what: String, expect: Expect, f: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = Vec::new();
        f(&mut bytes);
        out.push(Value {
            what,
            bytes,
            expect,
        });
    };
    match field.r#type() {
        ty @ (Type::String | Type::Bytes) => {
            for (what, bytes, refused) in bad_strings() {
                let expect = match (ty, refused) {
                    (Type::String, None) => Expect::Malformed,
                    (Type::String, Some(true)) => Expect::Violation(path.clone()),
                    _ => Expect::Anything,
                };
                encoded(what.to_owned(), expect, &|buf| {
                    length_delimited(number, &bytes, buf);
                });
            }
        }
        Type::Int32 | Type::Int64 | Type::Enum => {
            for (what, value) in [
                ("-1", -1i64),
                ("i32::MAX", i64::from(i32::MAX)),
                ("i32::MIN", i64::from(i32::MIN)),
                ("i64::MAX", i64::MAX),
                ("999 (unknown enum value)", 999),
            ] {
                encoded(what.to_owned(), Expect::Anything, &|buf| {
                    varint(number, value.cast_unsigned(), buf);
                });
            }
        }
        Type::Uint32 | Type::Uint64 => {
            for (what, value) in [("u32::MAX", u64::from(u32::MAX)), ("u64::MAX", u64::MAX)] {
                encoded(what.to_owned(), Expect::Anything, &|buf| {
                    varint(number, value, buf);
                });
            }
        }
        Type::Bool => encoded("true".to_owned(), Expect::Anything, &|buf| {
            varint(number, 1, buf);
        }),
        Type::Message => {
            encoded("empty message".to_owned(), Expect::Anything, &|buf| {
                length_delimited(number, &[], buf);
            });
            let nested: Vec<FieldDescriptorProto> = match field.type_name() {
                ".google.protobuf.Timestamp" => vec![
                    scalar("seconds", 1, Type::Int64),
                    scalar("nanos", 2, Type::Int32),
                ],
                ".google.protobuf.FieldMask" => vec![FieldDescriptorProto {
                    label: Some(prost_types::field_descriptor_proto::Label::Repeated.into()),
                    ..scalar("paths", 1, Type::String)
                }],
                name => message(set, name)
                    .unwrap_or_else(|| panic!("unknown message type {name}"))
                    .field
                    .clone(),
            };
            if depth < 2 {
                for inner in &nested {
                    for value in values(set, inner, depth + 1) {
                        let expect = match value.expect {
                            Expect::Violation(inner_path) => {
                                Expect::Violation(format!("{path}.{inner_path}"))
                            }
                            other => other,
                        };
                        encoded(
                            format!("{}: {}", inner.name(), value.what),
                            expect,
                            &|buf| {
                                length_delimited(number, &value.bytes, buf);
                            },
                        );
                    }
                }
            }
        }
        other => panic!(
            "{}: a field of type {other:?}: teach this test its values",
            field.name()
        ),
    }
    out
}

fn scalar(name: &str, number: i32, ty: Type) -> FieldDescriptorProto {
    FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        r#type: Some(ty.into()),
        ..Default::default()
    }
}

fn cases(set: &FileDescriptorSet, input: &DescriptorProto) -> Vec<Case> {
    let plain = |what: String, body: Vec<u8>, with_session, expect| Case {
        what,
        body,
        metadata: Vec::new(),
        with_session,
        expect,
    };
    let mut cases = vec![
        plain("empty request".into(), Vec::new(), false, Expect::Anything),
        plain(
            "empty request, with a session".into(),
            Vec::new(),
            true,
            Expect::Anything,
        ),
        plain(
            "garbage body".into(),
            vec![0xff, 0xff, 0xff, 0xff],
            true,
            Expect::Malformed,
        ),
        plain(
            "truncated field".into(),
            vec![0x0a, 0x10, b'a'],
            true,
            Expect::Malformed,
        ),
        plain(
            "unknown field".into(),
            vec![0xf8, 0xff, 0xff, 0x7f, 0x01],
            true,
            Expect::Anything,
        ),
    ];
    for field in &input.field {
        for value in values(set, field, 0) {
            cases.push(plain(
                format!("{}: {}", field.name(), value.what),
                value.bytes,
                true,
                value.expect,
            ));
        }
    }
    let bearer = |value: &[u8]| [b"Bearer ".as_slice(), value].concat();
    for (what, name, value) in [
        (
            "authorization 64 KiB",
            "authorization",
            bearer(&vec![b'a'; 64 * 1024]),
        ),
        (
            "authorization empty bearer",
            "authorization",
            b"Bearer".to_vec(),
        ),
        (
            "authorization basic",
            "authorization",
            b"Basic Zm9vOmJhcg==".to_vec(),
        ),
        (
            "authorization not ASCII",
            "authorization",
            bearer("jetón".as_bytes()),
        ),
        ("x-api-key bogus", "x-api-key", b"not-a-key".to_vec()),
        ("cookie 64 KiB", "cookie", vec![b'c'; 64 * 1024]),
    ] {
        cases.push(Case {
            what: what.to_owned(),
            body: Vec::new(),
            metadata: vec![(name, value)],
            with_session: false,
            expect: Expect::Anything,
        });
    }
    cases
}

/// The row count of every table, in one statement.
async fn row_counts(storage: &storage::Storage) -> Vec<i64> {
    let db = storage.db();
    let backend = db.get_database_backend();
    let list = match backend {
        sea_orm::DbBackend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        }
        _ => {
            "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        }
    };
    let tables: Vec<String> = db
        .query_all_raw(Statement::from_string(backend, list))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String>("", "name").unwrap())
        .collect();
    let counts: Vec<String> = tables
        .iter()
        .map(|t| format!("(SELECT COUNT(*) FROM \"{t}\")"))
        .collect();
    let row = db
        .query_one_raw(Statement::from_string(
            backend,
            format!("SELECT {}", counts.join(", ")),
        ))
        .await
        .unwrap()
        .unwrap();
    (0..tables.len())
        .map(|i| row.try_get_by_index::<i64>(i).unwrap())
        .collect()
}

async fn every_rpc_refuses_bad_input_cleanly(backend: Backend) {
    let server = TestServer::start(backend).await;
    let set = descriptors();
    server
        .create_user("owner@example.com", "correct horse battery")
        .await;
    let session = match server
        .first_step(password_login(
            "owner@example.com",
            "correct horse battery",
            "",
        ))
        .await
    {
        v1::authenticate_response::Result::Authenticated(session) => session.token,
        other => panic!("{other:?}"),
    };
    let channel = server.channel().await;
    let mut calls = 0;
    let mut failures = Vec::new();
    let mut checked = 0;
    for (package, service, method) in tollgate_proto::methods() {
        let descriptor = set
            .file
            .iter()
            .flat_map(|f| &f.service)
            .find(|s| s.name() == service)
            .and_then(|s| s.method.iter().find(|m| m.name() == method))
            .unwrap();
        let input = message(&set, descriptor.input_type()).unwrap();
        let path = format!("/{package}.{service}/{method}");
        for case in cases(&set, input) {
            let before = row_counts(&server.app.storage).await;
            let mut request = tonic::Request::new(case.body.clone());
            request.set_timeout(Duration::from_secs(10));
            if case.with_session {
                request.metadata_mut().insert(
                    "authorization",
                    AsciiMetadataValue::try_from(format!("Bearer {session}")).unwrap(),
                );
            }
            for (name, value) in &case.metadata {
                // Header values may carry bytes past ASCII (obs-text) as sent.
                let value = AsciiMetadataValue::try_from(value.as_slice()).unwrap();
                request.metadata_mut().insert(*name, value);
            }
            let started = Instant::now();
            let answer = call_raw(channel.clone(), &path, request).await;
            let took = started.elapsed();
            calls += 1;
            let context = format!("{path} with {}", case.what);
            checked += usize::from(case.expect != Expect::Anything);
            if let Err(status) = &answer {
                if matches!(
                    status.code(),
                    Code::Internal | Code::Unknown | Code::DataLoss | Code::Unimplemented
                ) {
                    failures.push(format!("{context}: {status:?}"));
                }
                // Every error carries ErrorInfo, with a reason of the contract's ErrorReason
                // (`reason` checks that).
                if reason(status).is_none() {
                    failures.push(format!("{context}: {:?} without ErrorInfo", status.code()));
                }
                if status.code() == Code::InvalidArgument
                    && row_counts(&server.app.storage).await != before
                {
                    failures.push(format!(
                        "{context}: refused as INVALID_ARGUMENT, yet it wrote"
                    ));
                }
            }
            match (&case.expect, &answer) {
                (Expect::Anything, _) => {}
                (Expect::Violation(field), Err(status))
                    if status.code() == Code::InvalidArgument
                        && violated_fields(status).contains(field) => {}
                (Expect::Malformed, Err(status))
                    if status.code() == Code::InvalidArgument
                        && reason(status).as_deref() == Some("MALFORMED_REQUEST") => {}
                (expect, answer) => {
                    failures.push(format!("{context}: wanted {expect:?}, got {answer:?}"));
                }
            }
            if took >= Duration::from_secs(5) {
                failures.push(format!("{context}: took {took:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "{calls} calls over {} RPCs, {checked} of them with a required answer",
        tollgate_proto::METHODS.len()
    );
    assert!(calls > 500, "{calls}");

    // The server still serves, on the same connection too.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    server.stop().await.unwrap();
}

both!(every_rpc_refuses_bad_input_cleanly);

/// One call's oversized metadata fails that call alone: the calls in flight beside it on the
/// same HTTP/2 connection complete. Metadata up to `server::MAX_HEADER_LIST_BYTES` (256 KiB)
/// reaches the server and is judged there, as any bad credential is; a larger header block
/// is refused by the HTTP/2 layer, which closes the connection (README, "Limits").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_metadata_fails_that_call_alone() {
    let server = TestServer::start(Backend::Sqlite).await;
    server
        .create_user("meta@example.com", "correct horse battery")
        .await;
    let channel = server.channel().await;
    let mut calls = Vec::new();
    for i in 0..24 {
        let channel = channel.clone();
        calls.push(tokio::spawn(async move {
            let mut client =
                v1::authentication_service_client::AuthenticationServiceClient::new(channel);
            let mut request = tonic::Request::new(password_login(
                "meta@example.com",
                "correct horse battery",
                "",
            ));
            // One call in three carries an API key of 64 KiB or 200 KiB.
            if i % 3 == 1 {
                let size = if i % 2 == 0 { 64 * 1024 } else { 200 * 1024 };
                let value = AsciiMetadataValue::try_from(vec![b'k'; size]).unwrap();
                request.metadata_mut().insert("x-api-key", value);
            }
            (i, client.authenticate(request).await.map(drop))
        }));
    }
    for call in calls {
        let (i, outcome) = call.await.unwrap();
        if i % 3 == 1 {
            let status = outcome.unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "call {i}: {status:?}");
            assert_eq!(reason(&status).as_deref(), Some("INVALID_API_KEY"));
        } else {
            assert!(outcome.is_ok(), "call {i}: {outcome:?}");
        }
    }
    server.stop().await.unwrap();
}
