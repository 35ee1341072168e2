//! The HMAC engine shared by HOTP and TOTP: algorithm choice, a keyed HMAC state prepared
//! once per verification, and RFC 4226 dynamic truncation.

use core::fmt;
use core::str::FromStr;

use crate::error::ParamError;

/// The HMAC hash function of a one-time password generator (RFC 6238 section 1.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// HMAC-SHA-1: RFC 4226's only algorithm and what almost every authenticator app uses.
    #[default]
    Sha1,
    /// HMAC-SHA-256 (RFC 6238).
    Sha256,
    /// HMAC-SHA-512 (RFC 6238).
    Sha512,
}

impl Algorithm {
    /// The name used in `otpauth://` URIs: `SHA1`, `SHA256` or `SHA512`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
            Self::Sha512 => "SHA512",
        }
    }

    /// The hash function's block size in bytes: HMAC hashes longer keys down to
    /// [`Algorithm::output_len`] bytes, so a longer secret adds no strength.
    pub const fn block_len(self) -> usize {
        match self {
            Self::Sha1 | Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }

    /// The size of the hash output in bytes, which is also the recommended secret length
    /// (RFC 4226 section 4 asks for at least 128 bits and recommends 160 for SHA-1).
    pub const fn output_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = ParamError;

    /// Parses `SHA1`, `SHA256` or `SHA512`, ignoring ASCII case and an optional hyphen
    /// (`sha-256`), as different apps spell it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            ("SHA1", Self::Sha1),
            ("SHA-1", Self::Sha1),
            ("SHA256", Self::Sha256),
            ("SHA-256", Self::Sha256),
            ("SHA512", Self::Sha512),
            ("SHA-512", Self::Sha512),
        ]
        .into_iter()
        .find_map(|(name, alg)| s.eq_ignore_ascii_case(name).then_some(alg))
        .ok_or(ParamError::UnknownAlgorithm)
    }
}

/// RFC 4226 section 5.3: the low four bits of the last byte select four bytes of the
/// hash, read big-endian with the top bit cleared.
#[cfg(test)]
pub(crate) fn truncate(hash: &[u8]) -> u32 {
    let offset = usize::from(hash.last().copied().unwrap_or(0) & 0x0f);
    // offset + 4 <= 19 < 20, the shortest hash, so the window is always inside the hash.
    let mut word = [0u8; 4];
    if let Some(bytes) = hash.get(offset..offset + 4) {
        word.copy_from_slice(bytes);
    }
    u32::from_be_bytes(word) & 0x7fff_ffff
}

/// A number of code digits, 6 to 8 (RFC 4226 allows 6 to 10; authenticator apps show 6 or
/// 8, and 9 or 10 digits of a 31-bit value are not uniform).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digits(u8);

impl Digits {
    /// Six digits: the default of every authenticator app.
    pub const SIX: Self = Self(6);
    /// Seven digits.
    pub const SEVEN: Self = Self(7);
    /// Eight digits.
    pub const EIGHT: Self = Self(8);

    /// Accepts 6, 7 or 8.
    pub const fn new(digits: u8) -> Result<Self, ParamError> {
        match digits {
            6..=8 => Ok(Self(digits)),
            _ => Err(ParamError::Digits(digits)),
        }
    }

    /// The number of digits.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// `value mod 10^digits`, with a constant divisor in each arm so that no hardware
    /// division is needed.
    #[inline]
    pub(crate) const fn reduce(self, value: u32) -> u32 {
        match self.0 {
            6 => value % 1_000_000,
            7 => value % 10_000_000,
            _ => value % 100_000_000,
        }
    }
}

impl Default for Digits {
    fn default() -> Self {
        Self::SIX
    }
}

impl fmt::Display for Digits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_parse_in_any_spelling() {
        for (text, alg) in [
            ("SHA1", Algorithm::Sha1),
            ("sha1", Algorithm::Sha1),
            ("SHA-1", Algorithm::Sha1),
            ("Sha256", Algorithm::Sha256),
            ("sha-256", Algorithm::Sha256),
            ("SHA512", Algorithm::Sha512),
        ] {
            assert_eq!(text.parse::<Algorithm>(), Ok(alg), "{text}");
            assert_eq!(alg.as_str().parse::<Algorithm>(), Ok(alg));
        }
        for bad in [
            "", "MD5", "SHA", "SHA3-256", "SHA1SHA1", "SHA-512-", "S-HA1", " SHA1",
        ] {
            assert_eq!(
                bad.parse::<Algorithm>(),
                Err(ParamError::UnknownAlgorithm),
                "{bad}"
            );
        }
    }

    #[test]
    fn digits_outside_six_to_eight_are_refused() {
        for d in [0u8, 1, 5, 9, 10, 255] {
            assert_eq!(Digits::new(d), Err(ParamError::Digits(d)));
        }
        for d in 6u8..=8 {
            assert_eq!(Digits::new(d).map(Digits::get), Ok(d));
        }
        assert_eq!(Digits::SIX.reduce(1_284_755_224), 755_224);
        assert_eq!(Digits::SEVEN.reduce(1_284_755_224), 4_755_224);
        assert_eq!(Digits::EIGHT.reduce(1_284_755_224), 84_755_224);
    }

    #[test]
    fn truncation_reads_the_last_possible_offset() {
        // Offset 15 reads bytes 15..19 of a 20-byte hash: the highest window there is.
        let mut hash = [0u8; 20];
        hash[15..19].copy_from_slice(&[0xff, 0x01, 0x02, 0x03]);
        hash[19] = 0x0f;
        assert_eq!(truncate(&hash), 0x7f01_0203);
    }
}
