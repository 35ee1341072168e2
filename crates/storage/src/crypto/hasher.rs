//! Keyed hashes of tokens and codes: what the database stores instead of the values.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// What a hash is of. Each purpose hashes under its own label, so a value valid for one
/// purpose never matches another's hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashPurpose {
    /// A session token.
    SessionToken,
    /// A login challenge or enrollment token.
    ChallengeToken,
    /// A remembered device's token.
    DeviceToken,
    /// A recovery code (bound to its user by the caller's input).
    RecoveryCode,
    /// An SMS code (bound to its factor by the caller's input).
    SmsCode,
    /// The key of a throttling counter (for example a normalized email, so that counters
    /// exist for unknown accounts too without storing the address).
    ThrottleKey,
}

impl HashPurpose {
    const fn label(self) -> &'static [u8] {
        match self {
            Self::SessionToken => b"tollgate/session-token/v1",
            Self::ChallengeToken => b"tollgate/challenge-token/v1",
            Self::DeviceToken => b"tollgate/device-token/v1",
            Self::RecoveryCode => b"tollgate/recovery-code/v1",
            Self::SmsCode => b"tollgate/sms-code/v1",
            Self::ThrottleKey => b"tollgate/throttle-key/v1",
        }
    }
}

/// HMAC-SHA256 of a value under the server's hash key. `Debug` shows nothing of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Constant-time comparison.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// Computes [`TokenHash`]es under one server key.
#[derive(Clone)]
pub struct SecretHasher {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHasher([REDACTED])")
    }
}

impl SecretHasher {
    /// A hasher under a 256-bit `key`.
    pub fn new(key: &Zeroizing<[u8; 32]>) -> Self {
        // HMAC zero-pads a short key to the block; doing it here makes the setup infallible
        // (no fallback key) and gives the same MAC as the 32-byte key itself.
        let mut block = Zeroizing::new([0u8; 64]);
        let (head, _) = block.split_at_mut(32);
        head.copy_from_slice(key.as_ref());
        let mac = <Hmac<Sha256> as KeyInit>::new(&(*block).into());
        Self { mac }
    }

    /// HMAC(key, label(purpose) ‖ 0 ‖ len(parts) … ‖ parts): each part is length-prefixed,
    /// so `("ab", "c")` and `("a", "bc")` differ.
    pub fn hash(&self, purpose: HashPurpose, parts: &[&[u8]]) -> TokenHash {
        let mut mac = self.mac.clone();
        mac.update(purpose.label());
        mac.update(&[0]);
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        TokenHash(mac.finalize().into_bytes().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_keys_and_part_boundaries_all_separate() {
        let a = SecretHasher::new(&Zeroizing::new([1; 32]));
        let b = SecretHasher::new(&Zeroizing::new([2; 32]));
        let h = a.hash(HashPurpose::SessionToken, &[b"token"]);
        assert_eq!(h, a.hash(HashPurpose::SessionToken, &[b"token"]));
        assert_ne!(h, a.hash(HashPurpose::ChallengeToken, &[b"token"]));
        assert_ne!(h, b.hash(HashPurpose::SessionToken, &[b"token"]));
        assert_ne!(
            a.hash(HashPurpose::SmsCode, &[b"ab", b"c"]),
            a.hash(HashPurpose::SmsCode, &[b"a", b"bc"])
        );
        assert!(h.ct_eq(&a.hash(HashPurpose::SessionToken, &[b"token"])));
        assert_eq!(format!("{h:?}"), "TokenHash(..)");
        assert_eq!(format!("{a:?}"), "SecretHasher([REDACTED])");
    }
}
