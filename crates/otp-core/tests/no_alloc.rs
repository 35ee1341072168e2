//! Generating and verifying codes must not touch the heap: the counting allocator of
//! `allocation-counter` (installed as this test binary's global allocator) sees every
//! allocation made on this thread.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers may panic: that is a failed test"
)]

use otp_core::{Algorithm, Digits, Hotp, HotpParams, Secret, Totp, TotpParams};

fn generators(algorithm: Algorithm) -> (Totp, Hotp) {
    // A fixed secret, so the expected counters below are deterministic.
    let secret = Secret::from_bytes(vec![0x42; algorithm.output_len()]);
    let totp = Totp::new(
        secret.clone(),
        TotpParams {
            algorithm,
            digits: Digits::EIGHT,
            ..TotpParams::default()
        },
    )
    .unwrap();
    let hotp = Hotp::new(
        secret,
        HotpParams {
            algorithm,
            ..HotpParams::default()
        },
    )
    .unwrap();
    (totp, hotp)
}

#[test]
fn the_counter_sees_allocations() {
    // The control: without it, a broken counter would make the test below pass vacuously.
    let info = allocation_counter::measure(|| {
        std::hint::black_box(vec![1u8; 32]);
    });
    assert_eq!(info.count_total, 1);
}

#[test]
fn generate_and_verify_do_not_allocate() {
    for algorithm in [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512] {
        let (totp, hotp) = generators(algorithm);
        let now = 1_700_000_000;
        let info = allocation_counter::measure(|| {
            let code = totp.generate(now).unwrap();
            assert!(totp.verify(code.as_str(), now).is_ok()); // accept path
            // The reject path (the outcome does not matter here, only that all steps run).
            std::hint::black_box(totp.verify("00000000", now)).ok();
            assert!(totp.verify("12", now).is_err()); // malformed
            let h = hotp.generate(3);
            assert_eq!(hotp.verify(h.as_str(), 0), Ok(3));
            std::hint::black_box(hotp.verify("000000", 0)).ok();
            let (a, b) = (hotp.generate(40), hotp.generate(41));
            assert_eq!(hotp.resync(a.as_str(), b.as_str(), 0), Ok(41));
        });
        assert_eq!(info.count_total, 0, "{algorithm}: {info:?}");
    }
}
