//! The server's cost of one WebAuthn assertion verification (webauthn-rs: clientDataJSON,
//! origin, RP ID hash, flags, counter and the ECDSA P-256 signature), next to an HOTP check
//! (otp-core: one HMAC-SHA1 per counter of the look-ahead window). The assertion comes from
//! a software authenticator, once; verifying it does not change the ceremony state, so each
//! iteration verifies the same assertion in full.
//!
//! Run with `cargo bench -p server --bench webauthn`; the figures are in BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use webauthn_authenticator_rs::WebauthnAuthenticator as _;
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_rs::prelude::{SecurityKey, Url, Uuid, WebauthnBuilder};

fn bench_verification(c: &mut Criterion) {
    let origin = Url::parse("http://localhost:8080").unwrap();
    let rp = WebauthnBuilder::new("localhost", &origin)
        .unwrap()
        .build()
        .unwrap();
    let mut token = SoftToken::new(true).unwrap().0;
    let (ccr, registration) = rp
        .start_securitykey_registration(Uuid::new_v4(), "ada", "Ada", None, None, None)
        .unwrap();
    let created = token.do_registration(origin.clone(), ccr).unwrap();
    let key: SecurityKey = rp
        .finish_securitykey_registration(&created, &registration)
        .unwrap();
    let (rcr, state) = rp
        .start_securitykey_authentication(std::slice::from_ref(&key))
        .unwrap();
    let assertion = token.do_authentication(origin, rcr).unwrap();
    c.bench_function("webauthn/verify_assertion", |b| {
        b.iter(|| {
            rp.finish_securitykey_authentication(black_box(&assertion), black_box(&state))
                .unwrap()
        });
    });

    let hotp = otp_core::Hotp::new(
        otp_core::Secret::from_bytes(b"12345678901234567890".to_vec()),
        otp_core::HotpParams::default(),
    )
    .unwrap();
    // The next expected counter is 0; the code is counter 5's, inside the look-ahead.
    let code = hotp.generate(5).to_string();
    c.bench_function("hotp/verify_in_window", |b| {
        b.iter(|| hotp.verify(black_box(&code), black_box(0)).unwrap());
    });
}

criterion_group!(benches, bench_verification);
criterion_main!(benches);
