//! Edge cases: parameters, time before T0, far-future times, window arithmetic at the ends
//! of the counter range, HOTP look-ahead and resynchronisation.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers may panic: that is a failed test"
)]

use otp_core::{
    Algorithm, BeforeT0, Digits, Hotp, HotpParams, ParamError, Secret, Totp, TotpParams,
    VerifyError, Window,
};

fn secret() -> Secret {
    Secret::from_bytes(b"12345678901234567890".to_vec())
}

fn totp(params: TotpParams) -> Totp {
    Totp::new(secret(), params).unwrap()
}

#[test]
fn parameters_are_checked_when_a_generator_is_built() {
    let err = |params| Totp::new(secret(), params).unwrap_err();
    assert_eq!(
        err(TotpParams {
            period: 0,
            ..TotpParams::default()
        }),
        ParamError::ZeroPeriod
    );
    assert_eq!(
        err(TotpParams {
            window: Window {
                behind: 11,
                ahead: 1
            },
            ..TotpParams::default()
        }),
        ParamError::WindowTooLarge {
            which: "behind",
            value: 11,
            max: 10
        }
    );
    assert_eq!(Digits::new(5), Err(ParamError::Digits(5)));
    assert_eq!(Digits::new(9), Err(ParamError::Digits(9)));

    // 80-bit secrets only with the explicit legacy option.
    let legacy = Secret::from_base32("JBSWY3DPEHPK3PXP").unwrap();
    assert_eq!(legacy.len(), 10);
    assert_eq!(
        Totp::new(legacy.clone(), TotpParams::default()).unwrap_err(),
        ParamError::SecretTooShort {
            bits: 80,
            min_bits: 128
        }
    );
    let params = TotpParams {
        legacy_short_secret: true,
        ..TotpParams::default()
    };
    assert!(Totp::new(legacy, params).is_ok());
    assert!(matches!(
        Totp::new(Secret::from_bytes(vec![7; 9]), params),
        Err(ParamError::SecretTooShort { bits: 72, .. })
    ));

    let hotp_err = |params| Hotp::new(secret(), params).unwrap_err();
    assert!(matches!(
        hotp_err(HotpParams {
            look_ahead: 101,
            ..HotpParams::default()
        }),
        ParamError::WindowTooLarge {
            which: "look-ahead",
            ..
        }
    ));
    assert!(matches!(
        hotp_err(HotpParams {
            resync_window: 10_001,
            ..HotpParams::default()
        }),
        ParamError::WindowTooLarge {
            which: "resync",
            ..
        }
    ));
}

#[test]
fn time_before_t0_has_no_step() {
    let t = totp(TotpParams {
        t0: 1_000,
        ..TotpParams::default()
    });
    assert_eq!(t.step(999), Err(BeforeT0));
    assert_eq!(t.generate(0), Err(BeforeT0));
    let code = t.generate(1_000).unwrap();
    assert_eq!(t.verify(code.as_str(), 999), Err(VerifyError::BeforeT0));
    assert_eq!(t.step(1_000), Ok(0));
    assert_eq!(t.step(1_029), Ok(0));
    assert_eq!(t.step(1_030), Ok(1));
    assert_eq!(t.step_start(1), Some(1_030));
}

#[test]
fn window_at_step_zero_does_not_wrap() {
    let t = totp(TotpParams::default());
    // At step 0 there is nothing behind: the window is steps 0 and 1.
    let step0 = t.generate_step(0);
    let step1 = t.generate_step(1);
    assert_eq!(t.verify(step0.as_str(), 0), Ok(0));
    assert_eq!(t.verify(step1.as_str(), 0), Ok(1));
    // The code of u64::MAX (what a wrapped `0 - 1` would reach) is refused at step 0.
    let wrapped = t.generate_step(u64::MAX);
    assert!(
        wrapped != step0 && wrapped != step1,
        "distinct codes for this secret"
    );
    assert_eq!(t.verify(wrapped.as_str(), 0), Err(VerifyError::Mismatch));
}

#[test]
fn times_past_2100_and_near_u64_max() {
    let t = totp(TotpParams::default());
    for time in [
        4_102_444_800,   // 2100-01-01
        253_402_300_799, // 9999-12-31
        u64::MAX / 2,
        u64::MAX - 30,
        u64::MAX,
    ] {
        let code = t.generate(time).unwrap();
        assert_eq!(t.verify(code.as_str(), time), Ok(time / 30), "at {time}");
    }
    // With a period of one second the step reaches u64::MAX and nothing lies ahead of it.
    let t = totp(TotpParams {
        period: 1,
        ..TotpParams::default()
    });
    let last = t.generate(u64::MAX).unwrap();
    assert_eq!(t.verify(last.as_str(), u64::MAX), Ok(u64::MAX));
    assert_eq!(t.verify(last.as_str(), u64::MAX - 1), Ok(u64::MAX));
    let behind = t.generate(u64::MAX - 1).unwrap();
    assert_eq!(t.verify(behind.as_str(), u64::MAX), Ok(u64::MAX - 1));
    assert_eq!(t.step_start(u64::MAX), Some(u64::MAX));
    let t30 = totp(TotpParams::default());
    assert_eq!(t30.step_start(u64::MAX), None);
}

#[test]
fn malformed_codes_are_refused_before_any_hmac() {
    let t = totp(TotpParams::default());
    for bad in [
        "",
        "12345",
        "1234567",
        "12a456",
        "123 456",
        "１２３４５６",
        "+12345",
    ] {
        assert_eq!(t.verify(bad, 59), Err(VerifyError::Malformed), "{bad:?}");
    }
    let eight = totp(TotpParams {
        digits: Digits::EIGHT,
        ..TotpParams::default()
    });
    let code = eight.generate(59).unwrap();
    assert_eq!(code.as_str().len(), 8);
    assert_eq!(
        eight.verify(&code.as_str()[..6], 59),
        Err(VerifyError::Malformed)
    );
}

#[test]
fn totp_window_is_configurable_and_prefers_the_current_step() {
    let t = totp(TotpParams {
        window: Window {
            behind: 2,
            ahead: 0,
        },
        ..TotpParams::default()
    });
    let now = 1_700_000_000;
    let step = now / 30;
    assert_eq!(
        t.verify(t.generate_step(step - 2).as_str(), now),
        Ok(step - 2)
    );
    assert_eq!(
        t.verify(t.generate_step(step - 3).as_str(), now),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        t.verify(t.generate_step(step + 1).as_str(), now),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn other_algorithms_and_periods_round_trip() {
    for algorithm in [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512] {
        for (digits, period) in [(Digits::SIX, 30), (Digits::SEVEN, 60), (Digits::EIGHT, 7)] {
            let t = Totp::new(
                Secret::generate(algorithm).unwrap(),
                TotpParams {
                    algorithm,
                    digits,
                    period,
                    ..TotpParams::default()
                },
            )
            .unwrap();
            let code = t.generate(1_234_567).unwrap();
            assert_eq!(code.as_str().len(), usize::from(digits.get()));
            assert_eq!(t.verify(code.as_str(), 1_234_567), Ok(1_234_567 / period));
        }
    }
}

fn rfc_hotp(params: HotpParams) -> Hotp {
    Hotp::new(secret(), params).unwrap()
}

#[test]
fn hotp_look_ahead_is_bounded_and_configurable() {
    let hotp = rfc_hotp(HotpParams::default());
    // Counter 9's code is found from 0 (look-ahead 10), counter 12's is not.
    assert_eq!(hotp.verify("520489", 0), Ok(9));
    let code12 = hotp.generate(12);
    assert_eq!(hotp.verify(code12.as_str(), 0), Err(VerifyError::Mismatch));
    assert_eq!(hotp.verify(code12.as_str(), 2), Ok(12));
    // A used counter is behind `next` and never matches again.
    assert_eq!(hotp.verify("755224", 1), Err(VerifyError::Mismatch));

    let strict = rfc_hotp(HotpParams {
        look_ahead: 0,
        ..HotpParams::default()
    });
    assert_eq!(strict.verify("287082", 0), Err(VerifyError::Mismatch));
    assert_eq!(strict.verify("287082", 1), Ok(1));
    // Near u64::MAX the window stops instead of wrapping to counter 0.
    assert_eq!(
        hotp.verify("755224", u64::MAX - 3),
        Err(VerifyError::Mismatch)
    );
    let top = hotp.generate(u64::MAX);
    assert_eq!(hotp.verify(top.as_str(), u64::MAX - 3), Ok(u64::MAX));
}

#[test]
fn hotp_resync_needs_two_consecutive_codes() {
    let hotp = rfc_hotp(HotpParams::default());
    let (c50, c51, c52) = (hotp.generate(50), hotp.generate(51), hotp.generate(52));
    // Counter 50 is beyond the look-ahead but within the resync window.
    assert_eq!(hotp.verify(c50.as_str(), 0), Err(VerifyError::Mismatch));
    assert_eq!(hotp.resync(c50.as_str(), c51.as_str(), 0), Ok(51));
    // Not consecutive, or in the wrong order: refused.
    assert_eq!(
        hotp.resync(c50.as_str(), c52.as_str(), 0),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        hotp.resync(c51.as_str(), c50.as_str(), 0),
        Err(VerifyError::Mismatch)
    );
    // The first code may be the expected counter itself.
    assert_eq!(hotp.resync("755224", "287082", 0), Ok(1));
    // Past the resync window (100 by default): refused; a wider window finds it.
    let (c200, c201) = (hotp.generate(200), hotp.generate(201));
    assert_eq!(
        hotp.resync(c200.as_str(), c201.as_str(), 0),
        Err(VerifyError::Mismatch)
    );
    let wide = rfc_hotp(HotpParams {
        resync_window: 1_000,
        ..HotpParams::default()
    });
    assert_eq!(wide.resync(c200.as_str(), c201.as_str(), 0), Ok(201));
    assert_eq!(
        hotp.resync("75522", c51.as_str(), 0),
        Err(VerifyError::Malformed)
    );
    // At the top of the counter range the window stops.
    let (top1, top) = (hotp.generate(u64::MAX - 1), hotp.generate(u64::MAX));
    assert_eq!(
        hotp.resync(top1.as_str(), top.as_str(), u64::MAX - 5),
        Ok(u64::MAX)
    );
}
