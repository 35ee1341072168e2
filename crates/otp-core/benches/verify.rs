//! TOTP verification against its floor and against the `totp-rs` crate.
//!
//! Run with `cargo bench -p otp-core`; the figures are written down in the crate README.
//!
//! - `otp-core/accept`: a code of the current step (SHA-1, 6 digits, window ±1).
//! - `otp-core/reject`: a wrong code, so every step of the window is computed.
//! - `floor`: one HMAC-SHA1 key setup plus three HMAC-SHA1 computations from the prepared
//!   key state, what a ±1-step reject cannot go below without a faster SHA-1.
//! - `floor/compressions`: the eight SHA-1 compressions that floor is made of (two for the
//!   key schedule, two per HMAC), with no HMAC bookkeeping at all: the true lower bound.
//! - `totp-rs/accept` and `totp-rs/reject`: the same verifications by `totp-rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, KeyInit, Mac};
use otp_core::{Secret, Totp, TotpParams};

const NOW: u64 = 1_700_000_015;
const KEY: [u8; 20] =
    *b"\x3d\xc6\xca\xa4\x82\x4a\x6d\x28\x87\x67\xb2\x33\x1e\x20\xb4\x31\x66\xcb\x85\xd9";

fn bench_verify(c: &mut Criterion) {
    let totp = Totp::new(Secret::from_bytes(KEY.to_vec()), TotpParams::default()).unwrap();
    let step = totp.step(NOW).unwrap();
    let accept = totp.generate(NOW).unwrap();
    let window: Vec<_> = (step - 1..=step + 1)
        .map(|s| totp.generate_step(s))
        .collect();
    // A code that matches no step of the window.
    let reject = (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .find(|code| window.iter().all(|w| w.as_str() != code))
        .unwrap();
    assert!(totp.verify(&reject, NOW).is_err());

    let theirs = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(KEY.to_vec())
        .build()
        .unwrap();
    assert_eq!(theirs.check(accept.as_str(), NOW), Some(step));
    assert_eq!(theirs.check(&reject, NOW), None);

    let mut group = c.benchmark_group("totp_verify_sha1_6digits_window1");
    group.bench_function("otp-core/accept", |b| {
        b.iter(|| totp.verify(black_box(accept.as_str()), black_box(NOW)));
    });
    group.bench_function("otp-core/reject", |b| {
        b.iter(|| totp.verify(black_box(&reject), black_box(NOW)));
    });
    group.bench_function("floor/compressions", |b| {
        let block = [0x5au8; 64];
        b.iter(|| {
            let mut state = [0u32; 5];
            for _ in 0..8 {
                sha1::block_api::compress(&mut state, core::slice::from_ref(black_box(&block)));
            }
            black_box(state)
        });
    });
    group.bench_function("floor", |b| {
        b.iter(|| {
            let mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(black_box(&KEY)).unwrap();
            for counter in [step - 1, step, step + 1] {
                black_box(
                    mac.clone()
                        .chain_update(black_box(counter).to_be_bytes())
                        .finalize()
                        .into_bytes(),
                );
            }
        });
    });
    group.bench_function("totp-rs/accept", |b| {
        b.iter(|| theirs.check(black_box(accept.as_str()), black_box(NOW)));
    });
    group.bench_function("totp-rs/reject", |b| {
        b.iter(|| theirs.check(black_box(&reject), black_box(NOW)));
    });
    group.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
