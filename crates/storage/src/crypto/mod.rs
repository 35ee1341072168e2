//! Secrets at rest: factor seeds sealed with AES-256-GCM under a versioned key ring, and
//! tokens and codes reduced to keyed hashes (HMAC-SHA256 under a server key).

mod hasher;
mod keyring;
mod token;

pub use hasher::{HashPurpose, SecretHasher, TokenHash};
pub use keyring::{CryptoError, KeyId, KeyRing};
pub use token::new_token;
