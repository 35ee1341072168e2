//! TOTP: time-based one-time passwords (RFC 6238).

use subtle::ConstantTimeEq;

use crate::algorithm::{Algorithm, Digits};
use crate::code::{self, Code};
use crate::error::{BeforeT0, ParamError, VerifyError};
use crate::mac::KeyedMac;
use crate::secret::Secret;

/// How many time steps around the current one a code may come from: clocks drift, and a
/// user may type a code just as it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    /// Steps before the current one (default 1).
    pub behind: u32,
    /// Steps after the current one (default 1).
    pub ahead: u32,
}

impl Window {
    /// The largest `behind` or `ahead` accepted: ten steps is five minutes either way at
    /// the usual 30-second period, well past any reasonable clock drift.
    pub const MAX: u32 = 10;

    /// Only the current step.
    pub const EXACT: Self = Self {
        behind: 0,
        ahead: 0,
    };
}

impl Default for Window {
    fn default() -> Self {
        Self {
            behind: 1,
            ahead: 1,
        }
    }
}

/// TOTP parameters. `Default` gives the values every authenticator app assumes: SHA-1,
/// 6 digits, a 30-second period from the Unix epoch, one step either side, and requires
/// secrets of at least 128 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TotpParams {
    /// The HMAC algorithm.
    pub algorithm: Algorithm,
    /// The number of code digits.
    pub digits: Digits,
    /// The time step in seconds (RFC 6238's X). Must not be zero.
    pub period: u64,
    /// The Unix time at which step 0 begins (RFC 6238's T0).
    pub t0: u64,
    /// The verification window.
    pub window: Window,
    /// Accept 80-bit secrets (16 base32 characters), which older apps and hosted products
    /// still issue. Off by default.
    pub legacy_short_secret: bool,
}

impl Default for TotpParams {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Sha1,
            digits: Digits::SIX,
            period: 30,
            t0: 0,
            window: Window::default(),
            legacy_short_secret: false,
        }
    }
}

/// A TOTP generator and verifier for one secret. It never reads the clock: every method takes
/// the Unix time in seconds. Verification returns the matched time step; the caller accepts
/// it only if it is beyond the last step accepted for the factor, which stops replays.
#[derive(Clone, Debug)]
pub struct Totp {
    secret: Secret,
    params: TotpParams,
}

impl Totp {
    /// Checks the parameters and the secret length.
    pub fn new(secret: Secret, params: TotpParams) -> Result<Self, ParamError> {
        secret.check_len(params.algorithm, params.legacy_short_secret)?;
        if params.period == 0 {
            return Err(ParamError::ZeroPeriod);
        }
        for (which, value) in [
            ("behind", params.window.behind),
            ("ahead", params.window.ahead),
        ] {
            if value > Window::MAX {
                return Err(ParamError::WindowTooLarge {
                    which,
                    value,
                    max: Window::MAX,
                });
            }
        }
        Ok(Self { secret, params })
    }

    /// The parameters.
    pub fn params(&self) -> &TotpParams {
        &self.params
    }

    /// The secret.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// The time step that `unix_time` falls in: `(unix_time - t0) / period`.
    pub fn step(&self, unix_time: u64) -> Result<u64, BeforeT0> {
        unix_time
            .checked_sub(self.params.t0)
            .map(|elapsed| elapsed / self.params.period)
            .ok_or(BeforeT0)
    }

    /// The Unix time at which `step` begins, or `None` past `u64::MAX`.
    pub fn step_start(&self, step: u64) -> Option<u64> {
        step.checked_mul(self.params.period)?
            .checked_add(self.params.t0)
    }

    /// The code for the step that `unix_time` falls in.
    pub fn generate(&self, unix_time: u64) -> Result<Code, BeforeT0> {
        Ok(self.generate_step(self.step(unix_time)?))
    }

    /// The code for time step `step`.
    pub fn generate_step(&self, step: u64) -> Code {
        let mut mac = KeyedMac::new(self.params.algorithm, self.secret.expose_bytes());
        Code::new(mac.code(step, self.params.digits), self.params.digits)
    }

    /// Verifies `code` at `unix_time` and returns the time step it matched. The current step
    /// is tried first, then the steps behind (nearest first), then those ahead; a wrong code
    /// costs one HMAC key setup and one HMAC per step in the window, and a malformed one
    /// costs none. Codes are compared in constant time.
    pub fn verify(&self, code: &str, unix_time: u64) -> Result<u64, VerifyError> {
        let wanted = code::parse(code, self.params.digits).ok_or(VerifyError::Malformed)?;
        let current = self
            .step(unix_time)
            .map_err(|BeforeT0| VerifyError::BeforeT0)?;
        let Window { behind, ahead } = self.params.window;
        let mut mac = KeyedMac::new(self.params.algorithm, self.secret.expose_bytes());
        let mut matches = |step: u64| bool::from(mac.code(step, self.params.digits).ct_eq(&wanted));

        if matches(current) {
            return Ok(current);
        }
        // `checked_*` stops the window at step 0 and at u64::MAX instead of wrapping.
        let behind = (1..=u64::from(behind)).filter_map(|d| current.checked_sub(d));
        let ahead = (1..=u64::from(ahead)).filter_map(|d| current.checked_add(d));
        behind
            .chain(ahead)
            .find(|&step| matches(step))
            .ok_or(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac::counters::count;

    fn totp(window: Window) -> Totp {
        let params = TotpParams {
            window,
            ..TotpParams::default()
        };
        Totp::new(Secret::from_bytes(b"12345678901234567890".to_vec()), params).unwrap()
    }

    #[test]
    fn a_malformed_code_costs_no_hmac() {
        let t = totp(Window::default());
        for bad in ["", "12345", "1234567", "12a456", "123 456"] {
            let (keys, macs) = count(|| assert_eq!(t.verify(bad, 59), Err(VerifyError::Malformed)));
            assert_eq!((keys, macs), (0, 0), "{bad:?}");
        }
    }

    #[test]
    fn a_wrong_code_computes_every_step_of_the_window_once() {
        for (behind, ahead) in [(1, 1), (0, 0), (3, 2), (10, 10)] {
            let t = totp(Window { behind, ahead });
            let now = 1_700_000_000;
            let step = t.step(now).unwrap();
            let wrong = (0..1_000_000u32)
                .map(|n| format!("{n:06}"))
                .find(|c| {
                    (step - u64::from(behind)..=step + u64::from(ahead))
                        .all(|s| t.generate_step(s).as_str() != c)
                })
                .unwrap();
            let (keys, macs) =
                count(|| assert_eq!(t.verify(&wrong, now), Err(VerifyError::Mismatch)));
            assert_eq!(
                (keys, macs),
                (1, 1 + behind + ahead),
                "window {behind}/{ahead}"
            );
        }
        // At step 0 nothing lies behind: only the current and the ahead steps are computed.
        let t = totp(Window::default());
        // (RFC 4226's secret: step 0 is 755224, step 1 is 287082.)
        let (_, macs) = count(|| assert_eq!(t.verify("000000", 0), Err(VerifyError::Mismatch)));
        assert_eq!(macs, 2);
    }

    #[test]
    fn the_current_code_is_accepted_after_one_hmac() {
        let t = totp(Window::default());
        let code = t.generate(59).unwrap();
        let (keys, macs) = count(|| assert_eq!(t.verify(code.as_str(), 59), Ok(1)));
        assert_eq!((keys, macs), (1, 1));
    }
}
