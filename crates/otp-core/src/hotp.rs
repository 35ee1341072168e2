//! HOTP: counter-based one-time passwords (RFC 4226).

use subtle::ConstantTimeEq;

use crate::algorithm::{Algorithm, Digits};
use crate::code::{self, Code};
use crate::error::{ParamError, VerifyError};
use crate::mac::KeyedMac;
use crate::secret::Secret;

/// HOTP parameters. `Default` gives SHA-1, 6 digits, a look-ahead of 10 and a resync window
/// of 100, and requires secrets of at least 128 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotpParams {
    /// The HMAC algorithm.
    pub algorithm: Algorithm,
    /// The number of code digits.
    pub digits: Digits,
    /// How many counters past the expected one a code may be and still be accepted
    /// (RFC 4226 section 7.4's look-ahead window `s`), for button presses that never reached
    /// the server. At most [`HotpParams::MAX_LOOK_AHEAD`].
    pub look_ahead: u32,
    /// How far ahead [`Hotp::resync`] searches for two consecutive codes. At most
    /// [`HotpParams::MAX_RESYNC_WINDOW`].
    pub resync_window: u32,
    /// Accept 80-bit secrets (16 base32 characters), which older apps and hosted products
    /// still issue. Off by default: RFC 4226 requires 128 bits.
    pub legacy_short_secret: bool,
}

impl HotpParams {
    /// The largest look-ahead window accepted: each step adds a chance for a guessed code.
    pub const MAX_LOOK_AHEAD: u32 = 100;
    /// The largest resync window accepted. Two consecutive codes must match, so even this
    /// window leaves a guess about one chance in 10^8 (six digits).
    pub const MAX_RESYNC_WINDOW: u32 = 10_000;
}

impl Default for HotpParams {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Sha1,
            digits: Digits::SIX,
            look_ahead: 10,
            resync_window: 100,
            legacy_short_secret: false,
        }
    }
}

/// An HOTP generator and verifier for one secret. Verification takes the counter as a
/// parameter and returns the matched counter; the caller stores it and passes `matched + 1`
/// next time, which is what makes a code single-use.
#[derive(Clone, Debug)]
pub struct Hotp {
    secret: Secret,
    params: HotpParams,
}

impl Hotp {
    /// Checks the parameters and the secret length.
    pub fn new(secret: Secret, params: HotpParams) -> Result<Self, ParamError> {
        secret.check_len(params.algorithm, params.legacy_short_secret)?;
        if params.look_ahead > HotpParams::MAX_LOOK_AHEAD {
            return Err(ParamError::WindowTooLarge {
                which: "look-ahead",
                value: params.look_ahead,
                max: HotpParams::MAX_LOOK_AHEAD,
            });
        }
        if params.resync_window > HotpParams::MAX_RESYNC_WINDOW {
            return Err(ParamError::WindowTooLarge {
                which: "resync",
                value: params.resync_window,
                max: HotpParams::MAX_RESYNC_WINDOW,
            });
        }
        Ok(Self { secret, params })
    }

    /// The parameters.
    pub fn params(&self) -> &HotpParams {
        &self.params
    }

    /// The secret.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// The code for `counter`.
    pub fn generate(&self, counter: u64) -> Code {
        let mut mac = KeyedMac::new(self.params.algorithm, self.secret.expose_bytes());
        Code::new(mac.code(counter, self.params.digits), self.params.digits)
    }

    /// Verifies `code` against the counters `next ..= next + look_ahead` (stopping at
    /// `u64::MAX`) and returns the counter it matched. `next` is the counter expected now:
    /// one past the last accepted counter.
    pub fn verify(&self, code: &str, next: u64) -> Result<u64, VerifyError> {
        let wanted = code::parse(code, self.params.digits).ok_or(VerifyError::Malformed)?;
        let mut mac = KeyedMac::new(self.params.algorithm, self.secret.expose_bytes());
        let last = next.saturating_add(u64::from(self.params.look_ahead));
        (next..=last)
            .find(|&counter| bool::from(mac.code(counter, self.params.digits).ct_eq(&wanted)))
            .ok_or(VerifyError::Mismatch)
    }

    /// Resynchronises a token whose counter ran ahead of the server's (RFC 4226 appendix E.4):
    /// `first` and `second` must be the codes of two consecutive counters `c` and `c + 1`
    /// with `next <= c` and `c + 1 <= next + resync_window`. Returns `c + 1`, the last
    /// counter now used; the next expected counter is one past it.
    pub fn resync(&self, first: &str, second: &str, next: u64) -> Result<u64, VerifyError> {
        let digits = self.params.digits;
        let first = code::parse(first, digits).ok_or(VerifyError::Malformed)?;
        let second = code::parse(second, digits).ok_or(VerifyError::Malformed)?;
        let mut mac = KeyedMac::new(self.params.algorithm, self.secret.expose_bytes());
        let last = next.saturating_add(u64::from(self.params.resync_window));
        // Each counter's code is computed once and reused as the previous code of the next.
        let mut previous = mac.code(next, digits);
        // An empty range when `next` is u64::MAX: there is no consecutive pair up there.
        let Some(start) = next.checked_add(1) else {
            return Err(VerifyError::Mismatch);
        };
        for counter in start..=last {
            let current = mac.code(counter, digits);
            if bool::from(previous.ct_eq(&first) & current.ct_eq(&second)) {
                return Ok(counter);
            }
            previous = current;
        }
        Err(VerifyError::Mismatch)
    }
}
