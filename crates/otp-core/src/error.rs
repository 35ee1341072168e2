//! Error types. Each names what is wrong so a caller can turn it into a clear message.

use thiserror::Error;

/// A generator parameter is out of range. Returned when a [`crate::Hotp`] or
/// [`crate::Totp`] is built, so that verification itself has nothing left to check.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParamError {
    /// Codes must have 6, 7 or 8 digits.
    #[error("digits must be 6, 7 or 8, not {0}")]
    Digits(u8),
    /// The TOTP period must be at least one second.
    #[error("the period must be at least one second")]
    ZeroPeriod,
    /// The secret is shorter than the minimum (128 bits, or 80 with the legacy option).
    #[error("the secret has {bits} bits; at least {min_bits} are required")]
    SecretTooShort {
        /// The secret's length in bits.
        bits: usize,
        /// The minimum in force.
        min_bits: usize,
    },
    /// The secret is longer than the algorithm's block size: HMAC would hash it down.
    #[error("the secret has {bits} bits; at most {max_bits} are accepted")]
    SecretTooLong {
        /// The secret's length in bits.
        bits: usize,
        /// The maximum.
        max_bits: usize,
    },
    /// A verification window is wider than the maximum for its kind.
    #[error("the {which} window is {value} steps; at most {max} are allowed")]
    WindowTooLarge {
        /// Which window: `behind`, `ahead`, `look-ahead` or `resync`.
        which: &'static str,
        /// The configured value.
        value: u32,
        /// The maximum.
        max: u32,
    },
    /// The algorithm name is not SHA1, SHA256 or SHA512.
    #[error("the algorithm must be SHA1, SHA256 or SHA512")]
    UnknownAlgorithm,
}

/// Why a code was not accepted.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// The code does not have exactly the configured number of ASCII digits. No HMAC was
    /// computed.
    #[error("the code must be exactly the configured number of digits")]
    Malformed,
    /// The code matches no counter or time step in the window.
    #[error("the code does not match")]
    Mismatch,
    /// The time is before the generator's T0, so there is no current time step.
    #[error("the time is before the generator's T0")]
    BeforeT0,
}

/// The time is before the generator's T0: there is no time step to generate a code for.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("the time is before the generator's T0")]
pub struct BeforeT0;

/// A base32 secret could not be decoded.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Base32Error {
    /// Nothing but separators was given.
    #[error("the secret is empty")]
    Empty,
    /// A character outside A-Z, 2-7 (in either case), space, hyphen and trailing `=`. The
    /// character itself is not kept: it is part of a secret, and errors get logged.
    #[error("invalid character at position {position}")]
    InvalidCharacter {
        /// Its position (in characters, from 0) in the input.
        position: usize,
    },
    /// `=` padding followed by more characters.
    #[error("padding '=' may only appear at the end")]
    MisplacedPadding,
    /// The number of base32 characters cannot encode a whole number of bytes.
    #[error("{0} base32 characters cannot encode a whole number of bytes")]
    InvalidLength(usize),
    /// The last character carries bits that are not part of any byte.
    #[error("the last character has non-zero trailing bits")]
    TrailingBits,
}

/// An `otpauth://` URI could not be parsed. Each variant names the part that is wrong.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UriError {
    /// The URI does not start with `otpauth://`.
    #[error("the URI must start with otpauth://")]
    Scheme,
    /// The type after `otpauth://` is not `totp` or `hotp`.
    #[error("the type must be totp or hotp")]
    Type,
    /// The label (the path after the type) is missing, badly percent-encoded or empty.
    #[error("the label is invalid: {0}")]
    Label(&'static str),
    /// A query parameter is badly percent-encoded or not `name=value`.
    #[error("the query parameter {0:?} is malformed")]
    Query(String),
    /// A parameter appears twice.
    #[error("the parameter {0:?} appears more than once")]
    Duplicate(&'static str),
    /// The `secret` parameter is missing.
    #[error("the secret parameter is missing")]
    MissingSecret,
    /// The `secret` parameter is not valid base32.
    #[error("the secret parameter is invalid: {0}")]
    Secret(Base32Error),
    /// The `algorithm` parameter is not SHA1, SHA256 or SHA512.
    #[error("the algorithm parameter must be SHA1, SHA256 or SHA512")]
    Algorithm,
    /// The `digits` parameter is not 6, 7 or 8.
    #[error("the digits parameter must be 6, 7 or 8")]
    Digits,
    /// The `period` parameter is not a positive whole number of seconds.
    #[error("the period parameter must be a positive whole number of seconds")]
    Period,
    /// The `counter` parameter is missing (on an hotp URI) or not a whole number.
    #[error("the counter parameter must be a whole number, and is required for hotp")]
    Counter,
    /// `period` on an hotp URI or `counter` on a totp URI.
    #[error("the parameter {0:?} does not belong to this type")]
    WrongTypeParameter(&'static str),
    /// The `issuer` parameter differs from the issuer prefix of the label.
    #[error("the issuer parameter differs from the issuer in the label")]
    IssuerMismatch,
}
