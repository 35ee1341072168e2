//! Compiles `proto/tollgate/v1/*.proto` with protox (pure Rust: no `protoc` on the machine)
//! and generates messages, clients and servers with tonic-prost-build. The descriptor set is
//! written to OUT_DIR for gRPC reflection.

use std::path::PathBuf;

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
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Messages that carry passwords, codes or tokens get a redacted Debug (src/lib.rs).
        .skip_debug(SECRET_MESSAGES.iter().map(|m| format!(".tollgate.v1.{m}")))
        .compile_fds(descriptors)?;
    Ok(())
}
