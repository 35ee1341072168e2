//! Compiles `proto/tollgate/v1/*.proto` with protox (pure Rust: no `protoc` on the machine)
//! and generates messages, clients and servers with tonic-prost-build. The descriptor set is
//! written to OUT_DIR for gRPC reflection.

use std::fmt::Write as _;
use std::path::PathBuf;

use heck::{ToSnakeCase as _, ToUpperCamelCase as _};
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};

/// Keep in step with the `redact!` list in src/lib.rs (a test there checks every one).
const SECRET_MESSAGES: &[&str] = &[
    "PasswordCredentials",
    "CreateUserRequest",
    "SetPasswordRequest",
    "Session",
    "SecondFactorRequired",
    "EnrollmentRequired",
    "ValidateSessionRequest",
    "RevokeSessionRequest",
    "BeginTotpEnrollmentResponse",
    "ConfirmTotpEnrollmentRequest",
    "ConfirmTotpEnrollmentResponse",
    "VerifySecondFactorRequest",
    "VerifySecondFactorResponse",
    "AuthenticateRequest",
    "BeginHotpEnrollmentRequest",
    "BeginHotpEnrollmentResponse",
    "ConfirmHotpEnrollmentRequest",
    "ConfirmHotpEnrollmentResponse",
    "ResyncHotpRequest",
    "RemoveFactorRequest",
    "RegenerateRecoveryCodesRequest",
    "RegenerateRecoveryCodesResponse",
    "ResetMfaRequest",
    "VerifyStepUpRequest",
    "UpdateMfaPolicyRequest",
    "BeginSmsEnrollmentRequest",
    "ConfirmSmsEnrollmentRequest",
    "ConfirmSmsEnrollmentResponse",
    "SendSmsCodeRequest",
    "BeginWebAuthnVerificationRequest",
    "ConfirmWebAuthnRegistrationResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("tollgate/v1"))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("tollgate_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    std::fs::write(out.join("tollgate_checks.rs"), checks(&descriptors)?)?;
    tonic_prost_build::configure()
        // Requests are checked as they are decoded (src/codec.rs).
        .codec_path("crate::codec::CheckingCodec")
        .build_server(true)
        .build_client(true)
        // Messages that carry passwords, codes or tokens get a redacted Debug (src/lib.rs).
        .skip_debug(SECRET_MESSAGES.iter().map(|m| format!(".tollgate.v1.{m}")))
        .compile_fds(descriptors)?;
    Ok(())
}

/// Rust's keywords that prost escapes as raw identifiers when a field is named after one.
const KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
    "static", "struct", "trait", "true", "type", "unsafe", "use", "where", "while", "async",
    "await", "dyn", "abstract", "become", "box", "do", "final", "macro", "override", "priv",
    "typeof", "unsized", "virtual", "yield", "try", "gen",
];

/// The field name prost generates.
fn rust_field(name: &str) -> String {
    let snake = name.to_snake_case();
    if KEYWORDS.contains(&snake.as_str()) {
        format!("r#{snake}")
    } else {
        snake
    }
}

/// Whether a field is walked for text: strings, and messages (which hold strings or not).
fn walked(ty: Type) -> bool {
    matches!(ty, Type::String | Type::Message)
}

/// The generated checks: `TextFields` for every message of the contract (every string field
/// at any depth, with its path), `Inbound` saying which messages are requests, and the list
/// of every RPC. A shape the generator does not know (a nested message, a map) stops the
/// build rather than go unchecked.
fn checks(set: &FileDescriptorSet) -> Result<String, Box<dyn std::error::Error>> {
    let mut requests = std::collections::BTreeSet::new();
    let mut code = String::from("/// Every RPC of the contract: (package, service, method).\n");
    code.push_str("pub const METHODS: &[(&str, &str, &str)] = &[\n");
    for file in set.file.iter().filter(|f| f.package() == "tollgate.v1") {
        for service in &file.service {
            for method in &service.method {
                if method.client_streaming() || method.server_streaming() {
                    return Err(format!("{}: streaming RPCs are not checked", method.name()).into());
                }
                writeln!(
                    code,
                    "    (\"tollgate.v1\", \"{}\", \"{}\"),",
                    service.name(),
                    method.name()
                )?;
                requests.insert(
                    method
                        .input_type()
                        .trim_start_matches(".tollgate.v1.")
                        .to_owned(),
                );
            }
        }
    }
    code.push_str("];\n\n");
    for file in set.file.iter().filter(|f| f.package() == "tollgate.v1") {
        for message in &file.message_type {
            message_checks(message, requests.contains(message.name()), &mut code)?;
        }
    }
    Ok(code)
}

fn message_checks(
    message: &DescriptorProto,
    request: bool,
    code: &mut String,
) -> Result<(), Box<dyn std::error::Error>> {
    let name = message.name();
    if !message.nested_type.is_empty() {
        return Err(format!("{name}: nested messages and maps are not checked yet").into());
    }
    let module = name.to_snake_case();
    writeln!(code, "impl crate::text::TextFields for v1::{name} {{")?;
    writeln!(code, "    #[allow(unused_variables)]")?;
    writeln!(
        code,
        "    fn check_text(&self, at: Option<&crate::text::FieldPath<'_>>, out: &mut Vec<crate::text::Violation>) {{"
    )?;
    // Plain fields: T, Option<T> (messages, proto3 `optional`) and Vec<T> (repeated) are all
    // TextFields.
    for field in &message.field {
        let in_oneof = field.oneof_index.is_some() && !field.proto3_optional();
        if in_oneof || !walked(field.r#type()) {
            continue;
        }
        writeln!(
            code,
            "        crate::text::TextFields::check_text(&self.{}, Some(&crate::text::FieldPath::child(at, \"{}\")), out);",
            rust_field(field.name()),
            field.name()
        )?;
    }
    // Real oneofs: an Option of an enum with one variant per field.
    for (index, oneof) in message.oneof_decl.iter().enumerate() {
        let members: Vec<_> = message
            .field
            .iter()
            .filter(|f| f.oneof_index == i32::try_from(index).ok() && !f.proto3_optional())
            .collect();
        if members.is_empty() {
            continue;
        }
        let enum_name = format!("v1::{module}::{}", oneof.name().to_upper_camel_case());
        writeln!(
            code,
            "        if let Some(value) = &self.{} {{",
            rust_field(oneof.name())
        )?;
        writeln!(code, "            match value {{")?;
        for field in members {
            let variant = field.name().to_upper_camel_case();
            if walked(field.r#type()) {
                writeln!(
                    code,
                    "                {enum_name}::{variant}(v) => crate::text::TextFields::check_text(v, Some(&crate::text::FieldPath::child(at, \"{}\")), out),",
                    field.name()
                )?;
            } else {
                writeln!(code, "                {enum_name}::{variant}(_) => {{}}")?;
            }
        }
        writeln!(code, "            }}")?;
        writeln!(code, "        }}")?;
    }
    writeln!(code, "    }}")?;
    writeln!(code, "}}")?;
    writeln!(
        code,
        "impl crate::text::Inbound for v1::{name} {{ const CHECKED: bool = {request}; }}\n"
    )?;
    Ok(())
}
