//! One-time passwords for Tollgate: HOTP ([RFC 4226]) and TOTP ([RFC 6238]) with SHA-1,
//! SHA-256 and SHA-512 and 6 to 8 digits, secrets, and `otpauth://` URIs.
//!
//! The crate is pure: no I/O and no clock. Verification takes the time (or the counter) as
//! a parameter and returns the time step (or counter) it matched, so the caller can refuse a
//! code that was already accepted. Codes are compared in constant time, malformed codes are
//! refused before any HMAC is computed, and generating or verifying a code does not allocate.
//!
//! ```
//! use otp_core::{Algorithm, Secret, Totp, TotpParams, OtpAuthUri};
//!
//! let secret = Secret::generate(Algorithm::Sha1).expect("the OS has a CSPRNG");
//! let totp = Totp::new(secret, TotpParams::default())?;
//! let uri = OtpAuthUri::for_totp(&totp, Some("ACME"), "alice@example.com").to_uri()?;
//! assert!(uri.starts_with("otpauth://totp/ACME:alice%40example.com?secret="));
//!
//! let now = 1_700_000_000;
//! let code = totp.generate(now)?;
//! let step = totp.verify(code.as_str(), now + 20)?; // typed 20 seconds later
//! assert_eq!(step, now / 30);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [RFC 4226]: https://www.rfc-editor.org/rfc/rfc4226
//! [RFC 6238]: https://www.rfc-editor.org/rfc/rfc6238

#![warn(missing_docs)]

mod algorithm;
mod code;
mod error;
mod hotp;
mod mac;
mod secret;
mod totp;
mod uri;

pub use algorithm::{Algorithm, Digits};
pub use code::Code;
pub use error::{Base32Error, BeforeT0, ParamError, UriError, VerifyError};
pub use hotp::{Hotp, HotpParams};
pub use secret::Secret;
pub use totp::{Totp, TotpParams, Window};
pub use uri::{OtpAuthUri, OtpKind};

/// Re-exported so callers can name the wiping wrapper of [`Secret::to_base32`] and
/// [`OtpAuthUri::to_uri`] without a direct dependency.
pub use zeroize::Zeroizing;
