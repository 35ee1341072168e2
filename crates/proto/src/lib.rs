//! The `tollgate.v1` gRPC contract, generated from `proto/tollgate/v1/*.proto`: messages,
//! clients (`*_client`) and servers (`*_server`), shared by the server, the tests and any
//! client tool.

pub mod codec;
pub mod text;

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

/// `Debug` for the messages that carry passwords, codes or tokens: the secret fields print as
/// `[REDACTED]`, so a message logged by mistake leaks nothing.
macro_rules! redact {
    ($($message:ident { $($field:ident),* } secret { $($secret:ident),* };)*) => {
        $(
            impl std::fmt::Debug for v1::$message {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.debug_struct(stringify!($message))
                        $(.field(stringify!($field), &self.$field))*
                        $(.field(stringify!($secret), &"[REDACTED]"))*
                        .finish()
                }
            }
        )*
    };
}

redact! {
    PasswordCredentials { email } secret { password };
    CreateUserRequest { email } secret { password };
    SetPasswordRequest { user_id } secret { new_password, current_password };
    Session { session_id, user_id, organization_id, assurance_level, expire_time, idle_expire_time, remembered_device } secret { token };
    SecondFactorRequired { expire_time, methods } secret { challenge_token };
    EnrollmentRequired { expire_time, allowed_methods } secret { enrollment_token };
    ValidateSessionRequest { } secret { token };
    RevokeSessionRequest { } secret { token };
    BeginTotpEnrollmentResponse { factor } secret { otpauth_uri, secret_base32, qr_code_png, qr_code_svg };
    ConfirmTotpEnrollmentRequest { factor_id, replaces_factor_id } secret { code };
    ConfirmTotpEnrollmentResponse { factor, session } secret { recovery_codes };
    VerifySecondFactorRequest { remember_device } secret { challenge_token, code };
    VerifySecondFactorResponse { result, recovery_codes_remaining, device_token_expire_time } secret { device_token };
    AuthenticateRequest { credentials, organization_id, client_context } secret { device_token };
    BeginHotpEnrollmentRequest { label, counter, digits } secret { secret_base32 };
    BeginHotpEnrollmentResponse { factor } secret { otpauth_uri, secret_base32 };
    ConfirmHotpEnrollmentRequest { factor_id, replaces_factor_id } secret { code };
    ConfirmHotpEnrollmentResponse { factor, session } secret { recovery_codes };
    ResyncHotpRequest { factor_id } secret { first_code, second_code };
    RemoveFactorRequest { factor_id } secret { proof };
    RegenerateRecoveryCodesRequest { } secret { proof };
    RegenerateRecoveryCodesResponse { } secret { recovery_codes };
    ResetMfaRequest { } secret { proof };
    VerifyStepUpRequest { } secret { session_token, code };
    UpdateMfaPolicyRequest { organization_id, policy, update_mask } secret { password };
    BeginSmsEnrollmentRequest { label } secret { phone_number };
    ConfirmSmsEnrollmentRequest { factor_id, replaces_factor_id } secret { code };
    ConfirmSmsEnrollmentResponse { factor, session } secret { recovery_codes };
    SendSmsCodeRequest { factor_id } secret { challenge_token, session_token };
    BeginWebAuthnVerificationRequest { } secret { challenge_token, session_token };
    ConfirmWebAuthnRegistrationResponse { factor, session } secret { recovery_codes };
}

// The oneofs of redacted messages lose their derived `Debug` with them (prost skips it by
// path); their variants are messages that print through their own `Debug`.
impl std::fmt::Debug for v1::authenticate_request::Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Password(p) => f.debug_tuple("Password").field(p).finish(),
            Self::Sso(s) => f.debug_tuple("Sso").field(s).finish(),
            Self::Passkey(p) => f.debug_tuple("Passkey").field(p).finish(),
        }
    }
}

impl std::fmt::Debug for v1::verify_second_factor_response::Result {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Authenticated(s) => f.debug_tuple("Authenticated").field(s).finish(),
            Self::EnrollmentRequired(e) => f.debug_tuple("EnrollmentRequired").field(e).finish(),
        }
    }
}

/// The generated text checks of every message, and the list of RPCs (build.rs).
mod checks {
    #![allow(
        unused_qualifications,
        reason = "generated code names every path in full"
    )]
    #![allow(
        deprecated,
        reason = "deprecated fields are still checked like the others"
    )]
    use crate::v1;
    include!(concat!(env!("OUT_DIR"), "/tollgate_checks.rs"));
}
pub use checks::METHODS;

/// Every RPC of the contract as (package, service, method).
pub fn methods() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    METHODS.iter().copied()
}

/// The encoded `FileDescriptorSet` of the contract, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tollgate_descriptor.bin"));

#[cfg(test)]
mod tests {
    use super::v1;

    #[test]
    fn secrets_never_print() {
        let shown = format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            v1::PasswordCredentials {
                email: "a@b.c".into(),
                password: "pw-SECRET".into()
            },
            v1::CreateUserRequest {
                email: "a@b.c".into(),
                password: "pw-SECRET".into()
            },
            v1::SetPasswordRequest {
                user_id: "u".into(),
                new_password: "new-SECRET".into(),
                current_password: "old-SECRET".into(),
            },
            v1::Session {
                token: "tok-SECRET".into(),
                ..Default::default()
            },
            v1::SecondFactorRequired {
                challenge_token: "ch-SECRET".into(),
                ..Default::default()
            },
            v1::EnrollmentRequired {
                enrollment_token: "en-SECRET".into(),
                ..Default::default()
            },
            v1::ValidateSessionRequest {
                token: "tok-SECRET".into()
            },
            v1::RevokeSessionRequest {
                token: "tok-SECRET".into()
            },
        );
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("a@b.c") && shown.contains("[REDACTED]"));
    }

    /// Every field that holds a password, a token, a code, a proof, a seed or a phone number
    /// is in a message whose `Debug` is redacted: a new RPC cannot forget it.
    #[test]
    fn every_secret_field_is_redacted() {
        use prost::Message as _;
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let source = include_str!("lib.rs");
        let redacted = source
            .split("redact! {")
            .nth(1)
            .and_then(|block| block.split("\n}").next())
            .unwrap();
        let secret = |name: &str| {
            !name.ends_with("page_token")
                && [
                    "password",
                    "token",
                    "code",
                    "proof",
                    "secret",
                    "phone_number",
                    "otpauth",
                ]
                .iter()
                .any(|word| name.contains(word))
                && !name.starts_with("masked_")
                && name != "recovery_codes_remaining"
        };
        let mut checked = 0;
        for file in set.file.iter().filter(|f| f.package() == "tollgate.v1") {
            for message in &file.message_type {
                // Text and bytes fields: a message-typed field prints through its own Debug.
                let text = |f: &&prost_types::FieldDescriptorProto| {
                    use prost_types::field_descriptor_proto::Type;
                    matches!(f.r#type(), Type::String | Type::Bytes)
                };
                for field in message
                    .field
                    .iter()
                    .filter(text)
                    .filter(|f| secret(f.name()))
                {
                    let line = redacted
                        .lines()
                        .find(|l| {
                            l.trim_start()
                                .starts_with(&format!("{} {{", message.name()))
                        })
                        .unwrap_or_else(|| {
                            panic!(
                                "{}.{} is secret, its Debug is not redacted",
                                message.name(),
                                field.name()
                            )
                        });
                    let after = line.split("secret {").nth(1).unwrap_or_default();
                    assert!(
                        after.contains(field.name()),
                        "{}.{} is not among the redacted fields",
                        message.name(),
                        field.name()
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 25, "{checked}");
    }
}
