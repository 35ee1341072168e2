//! The test vectors of RFC 4226 Appendix D and RFC 6238 Appendix B, through the public API.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers may panic: that is a failed test"
)]

use otp_core::{Algorithm, Digits, Hotp, HotpParams, Secret, Totp, TotpParams, Window};

const SEED_SHA1: &[u8] = b"12345678901234567890";
const SEED_SHA256: &[u8] = b"12345678901234567890123456789012";
const SEED_SHA512: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

#[test]
fn rfc4226_appendix_d_hotp_values() {
    let expected = [
        "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871",
        "520489",
    ];
    let hotp = Hotp::new(
        Secret::from_bytes(SEED_SHA1.to_vec()),
        HotpParams::default(),
    )
    .unwrap();
    for (counter, code) in (0u64..).zip(expected) {
        assert_eq!(hotp.generate(counter).as_str(), code, "counter {counter}");
        // Verifying from counter 0 finds each within the default look-ahead of 10.
        assert_eq!(hotp.verify(code, 0), Ok(counter));
        // Verifying from the counter itself finds it at once.
        assert_eq!(hotp.verify(code, counter), Ok(counter));
    }
}

/// RFC 6238 Appendix B: (time, SHA-1, SHA-256, SHA-512), eight digits, 30-second period.
const RFC6238_APPENDIX_B: [(u64, &str, &str, &str); 6] = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
];

/// The RFC's steps in hexadecimal, to check the time-to-step arithmetic.
const RFC6238_STEPS: [u64; 6] = [0x1, 0x23523EC, 0x23523ED, 0x273EF07, 0x3F940AA, 0x27BC86AA];

fn rfc_totp(algorithm: Algorithm, seed: &[u8]) -> Totp {
    Totp::new(
        Secret::from_bytes(seed.to_vec()),
        TotpParams {
            algorithm,
            digits: Digits::EIGHT,
            window: Window::EXACT,
            ..TotpParams::default()
        },
    )
    .unwrap()
}

#[test]
fn rfc6238_appendix_b_all_eighteen_rows() {
    let generators = [
        rfc_totp(Algorithm::Sha1, SEED_SHA1),
        rfc_totp(Algorithm::Sha256, SEED_SHA256),
        rfc_totp(Algorithm::Sha512, SEED_SHA512),
    ];
    let mut rows = 0;
    for ((time, sha1, sha256, sha512), step) in RFC6238_APPENDIX_B.into_iter().zip(RFC6238_STEPS) {
        for (totp, code) in generators.iter().zip([sha1, sha256, sha512]) {
            let alg = totp.params().algorithm;
            assert_eq!(totp.step(time), Ok(step), "{alg} at {time}");
            assert_eq!(
                totp.generate(time).unwrap().as_str(),
                code,
                "{alg} at {time}"
            );
            assert_eq!(totp.verify(code, time), Ok(step), "{alg} at {time}");
            rows += 1;
        }
    }
    assert_eq!(rows, 18);
}

#[test]
fn sha256_and_sha512_vectors_fail_under_the_wrong_algorithm() {
    // Guards against an implementation that ignores the algorithm parameter.
    let wrong = rfc_totp(Algorithm::Sha1, SEED_SHA256);
    assert_ne!(wrong.generate(59).unwrap().as_str(), "46119246");
    let wrong = rfc_totp(Algorithm::Sha256, SEED_SHA512);
    assert_ne!(wrong.generate(59).unwrap().as_str(), "90693936");
}
