//! AES-256-GCM sealing under a key ring.
//!
//! A sealed value is `version (1) ‖ key id (4, big-endian) ‖ nonce (12) ‖ ciphertext ‖ tag
//! (16)`. The associated data is the 5-byte header followed by the caller's context (for a
//! factor seed: the purpose and the factor's id), so a ciphertext copied onto another row,
//! or given another key id, fails to open.

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm::aead::Tag;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use thiserror::Error;
use zeroize::Zeroizing;

/// The identifier of a key in the ring. Stored with every sealed value.
pub type KeyId = u32;

const VERSION: u8 = 1;
const HEADER_LEN: usize = 5;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Why a value could not be sealed or opened. None of them carries secret material.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// The key ring has no key with this id (it was removed too early, or the value was
    /// sealed by another deployment).
    #[error("no key with id {0} in the key ring")]
    UnknownKey(KeyId),
    /// The value does not open: it was altered, belongs to another row, or the key with its
    /// id is not the one that sealed it.
    #[error("the sealed value failed authentication")]
    Authentication,
    /// The value is too short or of an unknown format version.
    #[error("the sealed value is malformed")]
    Malformed,
    /// The key ring is empty or its primary key is not in it.
    #[error("the key ring has no primary key {0}")]
    NoPrimary(KeyId),
    /// The operating system's random number generator failed.
    #[error("the random number generator failed")]
    Random,
}

/// The keys that seal factor seeds: one primary (used to seal) and any number of older ones
/// (used only to open, until rotation has re-sealed their rows). Keys are wiped on drop and
/// never printed.
#[derive(Clone)]
pub struct KeyRing {
    keys: BTreeMap<KeyId, Aes256Gcm>,
    primary: KeyId,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("primary", &self.primary)
            .finish()
    }
}

impl KeyRing {
    /// A ring of `keys` (id, 32-byte key), sealing with `primary`.
    pub fn new(
        primary: KeyId,
        keys: impl IntoIterator<Item = (KeyId, Zeroizing<[u8; 32]>)>,
    ) -> Result<Self, CryptoError> {
        let keys: BTreeMap<_, _> = keys
            .into_iter()
            .map(|(id, key)| (id, Aes256Gcm::new((&*key).into())))
            .collect();
        if !keys.contains_key(&primary) {
            return Err(CryptoError::NoPrimary(primary));
        }
        Ok(Self { keys, primary })
    }

    /// A fresh random 256-bit key.
    pub fn generate_key() -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut()).map_err(|_| CryptoError::Random)?;
        Ok(key)
    }

    /// The id of the key that seals new values.
    pub fn primary(&self) -> KeyId {
        self.primary
    }

    /// The ids of every key in the ring.
    pub fn key_ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.keys().copied()
    }

    /// Seals `plaintext` under the primary key, bound to `context`.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let cipher = self
            .keys
            .get(&self.primary)
            .ok_or(CryptoError::NoPrimary(self.primary))?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| CryptoError::Random)?;

        let mut header = [VERSION, 0, 0, 0, 0];
        let [_, id @ ..] = &mut header;
        *id = self.primary.to_be_bytes();
        let aad = associated_data(&header, context);
        // Encrypted in place in its own buffer, wiped if anything fails before the end.
        let mut body = Zeroizing::new(plaintext.to_vec());
        let tag = cipher
            .encrypt_inout_detached(&Nonce::from(nonce), &aad, body.as_mut_slice().into())
            .map_err(|_| CryptoError::Malformed)?;
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + body.len() + TAG_LEN);
        out.extend_from_slice(&header);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens a value sealed by [`KeyRing::seal`] with the same `context`.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let key_id = Self::key_id_of(sealed)?;
        if sealed.len() < HEADER_LEN + NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Malformed);
        }
        let cipher = self
            .keys
            .get(&key_id)
            .ok_or(CryptoError::UnknownKey(key_id))?;
        let (header, rest) = sealed.split_at(HEADER_LEN);
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Malformed)?;
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| CryptoError::Malformed)?;
        let aad = associated_data(header, context);
        let mut plaintext = Zeroizing::new(ciphertext.to_vec());
        cipher
            .decrypt_inout_detached(
                &Nonce::from(nonce),
                &aad,
                plaintext.as_mut_slice().into(),
                &Tag::<Aes256Gcm>::from(tag),
            )
            .map_err(|_| CryptoError::Authentication)?;
        Ok(plaintext)
    }

    /// The id of the key a value was sealed with.
    pub fn key_id_of(sealed: &[u8]) -> Result<KeyId, CryptoError> {
        match sealed {
            [VERSION, a, b, c, d, ..] => Ok(KeyId::from_be_bytes([*a, *b, *c, *d])),
            _ => Err(CryptoError::Malformed),
        }
    }
}

fn associated_data(header: &[u8], context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(primary: KeyId, ids: &[KeyId]) -> KeyRing {
        KeyRing::new(
            primary,
            ids.iter()
                .map(|&id| (id, Zeroizing::new([id.to_be_bytes()[3]; 32]))),
        )
        .unwrap()
    }

    #[test]
    fn seal_and_open_round_trip_bound_to_context() {
        let ring = ring(1, &[1]);
        let sealed = ring.seal(b"seed bytes", b"factor-a").unwrap();
        assert_eq!(KeyRing::key_id_of(&sealed), Ok(1));
        assert!(
            !sealed.windows(10).any(|w| w == b"seed bytes"),
            "ciphertext, not plaintext"
        );
        assert_eq!(
            ring.open(&sealed, b"factor-a").unwrap().as_slice(),
            b"seed bytes"
        );
        // Another row's context: the copy does not open.
        assert_eq!(
            ring.open(&sealed, b"factor-b").unwrap_err(),
            CryptoError::Authentication
        );
        // Two seals of the same value differ (random nonces).
        assert_ne!(sealed, ring.seal(b"seed bytes", b"factor-a").unwrap());
    }

    #[test]
    fn tampering_and_wrong_keys_are_clear_errors() {
        let ring = ring(1, &[1, 2]);
        let sealed = ring.seal(b"seed", b"ctx").unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            let err = ring.open(&bad, b"ctx").unwrap_err();
            let expected = match i {
                0 => CryptoError::Malformed,
                1..=3 => CryptoError::UnknownKey(KeyRing::key_id_of(&bad).unwrap()),
                // Key id 1 -> 0: not in the ring either.
                4 => CryptoError::UnknownKey(0),
                _ => CryptoError::Authentication,
            };
            assert_eq!(err, expected, "byte {i}");
        }
        // Relabelled with another key id that is in the ring: authentication fails.
        let mut relabelled = sealed.clone();
        relabelled[4] = 2;
        assert_eq!(
            ring.open(&relabelled, b"ctx").unwrap_err(),
            CryptoError::Authentication
        );
        // Truncated.
        assert_eq!(
            ring.open(&sealed[..20], b"ctx").unwrap_err(),
            CryptoError::Malformed
        );
        assert_eq!(ring.open(&[], b"ctx").unwrap_err(), CryptoError::Malformed);
        // A ring without the sealing key.
        let other = self::ring(3, &[3]);
        assert_eq!(
            other.open(&sealed, b"ctx").unwrap_err(),
            CryptoError::UnknownKey(1)
        );
    }

    #[test]
    fn the_primary_must_be_in_the_ring_and_debug_shows_only_ids() {
        assert_eq!(
            KeyRing::new(7, [(1, Zeroizing::new([0; 32]))]).unwrap_err(),
            CryptoError::NoPrimary(7)
        );
        let ring = ring(2, &[1, 2]);
        assert_eq!(
            format!("{ring:?}"),
            "KeyRing { key_ids: [1, 2], primary: 2 }"
        );
    }
}
