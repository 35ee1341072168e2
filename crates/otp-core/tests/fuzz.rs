//! Fuzzing the two parsers that take untrusted text, as property tests over arbitrary input:
//! no input may panic, and whatever parses must build back to something that parses the same.
//!
//! Runs 256 cases per property in the normal test run. For a long fuzzing session:
//!
//! ```sh
//! PROPTEST_CASES=1000000 cargo test --release -p otp-core --test fuzz
//! ```

#![allow(
    clippy::unwrap_used,
    reason = "test helpers may panic: that is a failed test"
)]

use otp_core::{OtpAuthUri, Secret};
use proptest::prelude::*;

/// Strings built from the pieces a URI is made of, so the fuzzer reaches deep into the
/// parser instead of failing at the scheme.
fn uri_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("otpauth://".to_owned()),
        Just("totp/".to_owned()),
        Just("hotp/".to_owned()),
        Just("?".to_owned()),
        Just("&".to_owned()),
        Just("=".to_owned()),
        Just(":".to_owned()),
        Just("%3A".to_owned()),
        Just("%".to_owned()),
        Just("+".to_owned()),
        Just("secret=".to_owned()),
        Just("issuer=".to_owned()),
        Just("algorithm=".to_owned()),
        Just("digits=".to_owned()),
        Just("period=".to_owned()),
        Just("counter=".to_owned()),
        Just("JBSWY3DPEHPK3PXP".to_owned()),
        "[0-9]{1,25}",
        "%[0-9A-Fa-f]{0,2}",
        "\\PC{0,8}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn uri_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = OtpAuthUri::parse(&text);
        let _ = OtpAuthUri::parse(&format!("otpauth://totp/{text}"));
    }

    #[test]
    fn uri_parser_is_stable_on_uri_like_input(text in uri_like()) {
        if let Ok(parsed) = OtpAuthUri::parse(&text) {
            // What we accept, we can write back out, and it reads back the same.
            let rebuilt = parsed.to_uri().unwrap();
            prop_assert_eq!(OtpAuthUri::parse(&rebuilt).unwrap(), parsed);
        }
    }

    #[test]
    fn base32_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(secret) = Secret::from_base32(&text) {
            prop_assert_eq!(Secret::from_base32(&secret.to_base32()).unwrap(), secret);
        }
    }

    #[test]
    fn base32_decoder_on_base32_like_input(text in "[A-Za-z2-7 =-]{0,80}") {
        if let Ok(secret) = Secret::from_base32(&text) {
            prop_assert_eq!(Secret::from_base32(&secret.to_base32()).unwrap(), secret);
        }
    }
}
