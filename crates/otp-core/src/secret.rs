//! The shared secret of a factor: generated from the OS CSPRNG, wiped on drop, never printed.
//! The only ways out are the explicit [`Secret::expose_bytes`] (to seal it for storage) and
//! [`Secret::to_base32`] (to show it to the user once, beside the QR code).

use core::fmt;

use data_encoding::BASE32_NOPAD;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::algorithm::Algorithm;
use crate::error::{Base32Error, ParamError};

/// A one-time password secret. `Debug` is redacted and the bytes are zeroized on drop.
#[derive(Clone)]
pub struct Secret {
    bytes: Zeroizing<Vec<u8>>,
}

impl Secret {
    /// A fresh secret from the operating system's CSPRNG, as long as the algorithm's output
    /// (20 bytes for SHA-1, 32 for SHA-256, 64 for SHA-512), as RFC 4226 and RFC 6238
    /// recommend.
    pub fn generate(algorithm: Algorithm) -> Result<Self, getrandom::Error> {
        Self::generate_len(algorithm.output_len())
    }

    /// A fresh secret of `len` bytes from the operating system's CSPRNG.
    pub fn generate_len(len: usize) -> Result<Self, getrandom::Error> {
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        getrandom::fill(&mut bytes)?;
        Ok(Self { bytes })
    }

    /// Takes ownership of raw secret bytes (for example after opening them from storage).
    /// The vector is moved, not copied, so no unwiped copy is left behind.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
        }
    }

    /// Decodes a base32 secret (RFC 4648 alphabet) the way people type it from a "can't
    /// scan the QR code?" screen: case does not matter, spaces and hyphens are ignored, and
    /// trailing `=` padding is accepted.
    pub fn from_base32(text: &str) -> Result<Self, Base32Error> {
        let mut clean = Zeroizing::new(Vec::with_capacity(text.len()));
        let mut padding = false;
        for (position, character) in text.chars().enumerate() {
            match character {
                ' ' | '-' | '\t' => {}
                '=' => padding = true,
                'a'..='z' | 'A'..='Z' | '2'..='7' if !padding => {
                    // The match arm guarantees an ASCII character.
                    clean.push(character.to_ascii_uppercase() as u8);
                }
                'a'..='z' | 'A'..='Z' | '2'..='7' => return Err(Base32Error::MisplacedPadding),
                _ => {
                    // The character itself is not reported: it is part of a secret.
                    return Err(Base32Error::InvalidCharacter { position });
                }
            }
        }
        if clean.is_empty() {
            return Err(Base32Error::Empty);
        }
        let len = BASE32_NOPAD
            .decode_len(clean.len())
            .map_err(|_| Base32Error::InvalidLength(clean.len()))?;
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        match BASE32_NOPAD.decode_mut(&clean, &mut bytes) {
            Ok(n) => {
                bytes.truncate(n);
                Ok(Self { bytes })
            }
            // The alphabet was checked above, so the only error left is the trailing bits.
            Err(_) => Err(Base32Error::TrailingBits),
        }
    }

    /// The secret in base32 without padding (RFC 4648), as authenticator apps expect it.
    pub fn to_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE32_NOPAD.encode(&self.bytes))
    }

    /// The base32 secret in groups of four characters separated by spaces, for typing by
    /// hand. [`Secret::from_base32`] reads it back.
    pub fn to_base32_grouped(&self) -> Zeroizing<String> {
        let plain = self.to_base32();
        let mut out = String::with_capacity(plain.len() + plain.len() / 4);
        for (i, c) in plain.chars().enumerate() {
            if i > 0 && i % 4 == 0 {
                out.push(' ');
            }
            out.push(c);
        }
        Zeroizing::new(out)
    }

    /// The raw bytes, for sealing into storage. Do not log them.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the secret has no bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Checks the length: at least 128 bits (or 80 with `legacy_short`, for the 16-character
    /// secrets that older apps and hosted products still issue) and at most the algorithm's
    /// block size.
    pub(crate) fn check_len(
        &self,
        algorithm: Algorithm,
        legacy_short: bool,
    ) -> Result<(), ParamError> {
        let bits = self.bytes.len() * 8;
        let min_bits = if legacy_short { 80 } else { 128 };
        if bits < min_bits {
            return Err(ParamError::SecretTooShort { bits, min_bits });
        }
        if self.bytes.len() > algorithm.block_len() {
            return Err(ParamError::SecretTooLong {
                bits,
                max_bits: algorithm.block_len() * 8,
            });
        }
        Ok(())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

/// Constant-time equality, so comparing secrets leaks nothing about where they differ.
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.bytes.as_slice().ct_eq(other.bytes.as_slice()).into()
    }
}

impl Eq for Secret {}

impl Zeroize for Secret {
    fn zeroize(&mut self) {
        self.bytes.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_have_the_algorithm_length_and_differ() {
        for (alg, len) in [
            (Algorithm::Sha1, 20),
            (Algorithm::Sha256, 32),
            (Algorithm::Sha512, 64),
        ] {
            let a = Secret::generate(alg).unwrap();
            let b = Secret::generate(alg).unwrap();
            assert_eq!(a.len(), len);
            assert_ne!(a, b, "two CSPRNG secrets must differ");
        }
    }

    #[test]
    fn debug_never_shows_the_bytes() {
        let secret = Secret::from_base32("JBSWY3DPEHPK3PXP").unwrap();
        let shown = format!("{secret:?} {secret:#?}");
        assert!(!shown.contains("JBSW"));
        assert!(!shown.contains("72"), "no byte values either: {shown}");
        assert_eq!(format!("{secret:?}"), "Secret([REDACTED])");
    }

    #[test]
    fn base32_decoding_accepts_what_people_type() {
        let canonical = Secret::from_base32("JBSWY3DPEHPK3PXP").unwrap();
        assert_eq!(canonical.expose_bytes(), b"Hello!\xde\xad\xbe\xef");
        for typed in [
            "jbswy3dpehpk3pxp",
            "JBSW Y3DP EHPK 3PXP",
            "jbsw-y3dp-ehpk-3pxp",
            " JBSWY3DPEHPK3PXP ",
            "JBSWY3DPEHPK3PXP======",
            "JbSw y3Dp\tEhPk 3pXp",
        ] {
            assert_eq!(Secret::from_base32(typed).unwrap(), canonical, "{typed:?}");
        }
    }

    #[test]
    fn base32_errors_say_what_is_wrong() {
        assert_eq!(Secret::from_base32("").unwrap_err(), Base32Error::Empty);
        assert_eq!(Secret::from_base32(" - ").unwrap_err(), Base32Error::Empty);
        assert_eq!(
            Secret::from_base32("JBSW1").unwrap_err(),
            Base32Error::InvalidCharacter { position: 4 }
        );
        assert_eq!(
            Secret::from_base32("JBSW=Y3DP").unwrap_err(),
            Base32Error::MisplacedPadding
        );
        // 3 characters (15 bits) cannot hold a whole number of bytes.
        assert_eq!(
            Secret::from_base32("ABC").unwrap_err(),
            Base32Error::InvalidLength(3)
        );
        // "AB" is one byte; "AD" sets a bit beyond it.
        assert_eq!(
            Secret::from_base32("AB").unwrap_err(),
            Base32Error::TrailingBits
        );
        assert_eq!(Secret::from_base32("AA").unwrap().expose_bytes(), [0]);
    }

    #[test]
    fn grouped_base32_reads_back() {
        let secret = Secret::generate(Algorithm::Sha1).unwrap();
        let grouped = secret.to_base32_grouped();
        assert_eq!(grouped.len(), 32 + 7);
        assert!(grouped.split(' ').all(|g| g.len() == 4));
        assert_eq!(Secret::from_base32(&grouped).unwrap(), secret);
    }

    #[test]
    fn length_limits() {
        let short = Secret::from_bytes(vec![1; 10]);
        assert_eq!(
            short.check_len(Algorithm::Sha1, false),
            Err(ParamError::SecretTooShort {
                bits: 80,
                min_bits: 128
            })
        );
        assert_eq!(short.check_len(Algorithm::Sha1, true), Ok(()));
        assert_eq!(
            Secret::from_bytes(vec![1; 9]).check_len(Algorithm::Sha1, true),
            Err(ParamError::SecretTooShort {
                bits: 72,
                min_bits: 80
            })
        );
        assert_eq!(
            Secret::from_bytes(vec![1; 16]).check_len(Algorithm::Sha1, false),
            Ok(())
        );
        // At most one block: 64 bytes for SHA-1 and SHA-256, 128 for SHA-512.
        for (alg, max) in [
            (Algorithm::Sha1, 64),
            (Algorithm::Sha256, 64),
            (Algorithm::Sha512, 128),
        ] {
            assert_eq!(
                Secret::from_bytes(vec![1; max]).check_len(alg, false),
                Ok(())
            );
            assert_eq!(
                Secret::from_bytes(vec![1; max + 1]).check_len(alg, false),
                Err(ParamError::SecretTooLong {
                    bits: (max + 1) * 8,
                    max_bits: max * 8
                })
            );
        }
    }

    #[test]
    fn zeroize_wipes_the_bytes() {
        // Drop runs the same `Zeroizing` wipe; an explicit call shows it without unsafe code.
        let mut secret = Secret::from_bytes(vec![0xa5; 20]);
        secret.zeroize();
        assert!(secret.expose_bytes().iter().all(|&b| b == 0));
        assert!(secret.is_empty(), "zeroize also truncates the vector");
    }
}
