//! Property tests: window behaviour at every offset, and round trips of base32 and URIs.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers may panic: that is a failed test"
)]

use otp_core::{
    Algorithm, Digits, Hotp, HotpParams, OtpAuthUri, OtpKind, Secret, Totp, TotpParams,
    VerifyError, Window,
};
use proptest::prelude::*;

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        Just(Algorithm::Sha1),
        Just(Algorithm::Sha256),
        Just(Algorithm::Sha512)
    ]
}

fn digits() -> impl Strategy<Value = Digits> {
    prop_oneof![Just(Digits::SIX), Just(Digits::SEVEN), Just(Digits::EIGHT)]
}

fn secret_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 16..=64)
}

prop_compose! {
    fn totp_params()(
        algorithm in algorithm(),
        digits in digits(),
        period in 1u64..=300,
        t0 in 0u64..=1_000_000,
        behind in 0u32..=Window::MAX,
        ahead in 0u32..=Window::MAX,
    ) -> TotpParams {
        TotpParams { algorithm, digits, period, t0, window: Window { behind, ahead }, ..TotpParams::default() }
    }
}

proptest! {
    /// A code from any step inside the window verifies and returns that step, unless an
    /// earlier-tried step happens to share its code, in which case that step is returned.
    #[test]
    fn codes_inside_the_window_verify_to_their_step(
        bytes in secret_bytes(),
        params in totp_params(),
        elapsed in prop_oneof![0u64..=3_600, 0u64..=10_000_000_000],
        offset in -10i64..=10,
    ) {
        let totp = Totp::new(Secret::from_bytes(bytes), params).unwrap();
        let now = params.t0 + elapsed;
        let current = totp.step(now).unwrap();
        let window = params.window;
        let inside = (-i64::from(window.behind)..=i64::from(window.ahead)).contains(&offset);
        let Some(step) = current.checked_add_signed(offset) else { return Ok(()) };
        let code = totp.generate_step(step);
        let result = totp.verify(code.as_str(), now);

        // The steps the verifier tries, in its order: current, behind (nearest first), ahead.
        let tried: Vec<u64> = std::iter::once(current)
            .chain((1..=u64::from(window.behind)).filter_map(|d| current.checked_sub(d)))
            .chain((1..=u64::from(window.ahead)).filter_map(|d| current.checked_add(d)))
            .collect();
        let first_with_code = tried.iter().copied().find(|&s| totp.generate_step(s) == code);
        if inside {
            prop_assert!(tried.contains(&step));
            // `step` itself, unless a step tried before it shares the code (p = 10^-digits).
            prop_assert_eq!(result, Ok(first_with_code.unwrap()));
        } else {
            // Outside the window only a collision with a step inside it could match.
            prop_assert_eq!(result, first_with_code.ok_or(VerifyError::Mismatch));
        }
    }

    /// Codes far outside the window are refused (a different step's code collides with
    /// probability 10^-digits per step; the assertion allows for exactly that).
    #[test]
    fn codes_outside_the_window_are_refused(
        bytes in secret_bytes(),
        params in totp_params(),
        elapsed in 0u64..=10_000_000_000,
        distance in 11u64..=1_000_000,
        later in any::<bool>(),
    ) {
        let totp = Totp::new(Secret::from_bytes(bytes), params).unwrap();
        let now = params.t0 + elapsed;
        let current = totp.step(now).unwrap();
        let far = if later { current + distance } else { current.saturating_sub(distance) };
        prop_assume!(far.abs_diff(current) > u64::from(Window::MAX));
        let code = totp.generate_step(far);
        match totp.verify(code.as_str(), now) {
            Err(VerifyError::Mismatch) => {}
            Ok(step) => {
                // Only a genuine collision inside the window may match.
                prop_assert!(step.abs_diff(current) <= u64::from(Window::MAX));
                prop_assert_eq!(totp.generate_step(step), code);
            }
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    /// HOTP: a code from `next + k` verifies to that counter for k within the look-ahead.
    #[test]
    fn hotp_look_ahead(
        bytes in secret_bytes(),
        algorithm in algorithm(),
        digits in digits(),
        next in any::<u64>(),
        k in 0u64..=10,
    ) {
        let hotp = Hotp::new(Secret::from_bytes(bytes), HotpParams { algorithm, digits, ..HotpParams::default() }).unwrap();
        let Some(counter) = next.checked_add(k) else { return Ok(()) };
        let code = hotp.generate(counter);
        let first = (next..=counter).find(|&c| hotp.generate(c) == code).unwrap();
        prop_assert_eq!(hotp.verify(code.as_str(), next), Ok(first));
    }

    #[test]
    fn base32_round_trips(bytes in prop::collection::vec(any::<u8>(), 1..=128)) {
        let secret = Secret::from_bytes(bytes.clone());
        let text = secret.to_base32();
        prop_assert!(!text.contains('='));
        prop_assert_eq!(Secret::from_base32(&text).unwrap(), secret.clone());
        prop_assert_eq!(Secret::from_base32(&text.to_lowercase()).unwrap(), secret.clone());
        prop_assert_eq!(Secret::from_base32(&secret.to_base32_grouped()).unwrap(), secret.clone());
        prop_assert_eq!(secret.expose_bytes(), &bytes[..]);
    }

    #[test]
    fn uri_round_trips(
        bytes in secret_bytes(),
        algorithm in algorithm(),
        digits in digits(),
        totp in any::<bool>(),
        number in any::<u64>(),
        issuer in "\\PC{1,30}",
        account in "[^ ]\\PC{0,40}",
        plain_account in "[^ :][^:]{0,40}",
        with_issuer in any::<bool>(),
    ) {
        // Every label `to_uri` accepts: any issuer and account (colons included), or, with no
        // issuer, an account without a colon. The builder refuses the rest (tests/uri.rs).
        let (issuer, account) = if with_issuer { (Some(issuer), account) } else { (None, plain_account) };
        let kind = if totp {
            OtpKind::Totp { period: number.max(1) }
        } else {
            OtpKind::Hotp { counter: number }
        };
        let uri = OtpAuthUri { kind, issuer, account, secret: Secret::from_bytes(bytes), algorithm, digits };
        let text = uri.to_uri().unwrap();
        prop_assert!(text.is_ascii());
        prop_assert_eq!(OtpAuthUri::parse(&text).unwrap(), uri);
    }
}
