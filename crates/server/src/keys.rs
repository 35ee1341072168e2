//! The key file: the encryption key ring for factor seeds and the hash key for tokens and
//! codes.
//!
//! ```toml
//! primary = 1
//! hash_key = "base64 of 32 random bytes"
//!
//! [[encryption]]
//! id = 1
//! key = "base64 of 32 random bytes"
//! ```

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use storage::crypto::{KeyRing, SecretHasher};
use zeroize::Zeroizing;

use crate::config::ConfigError;

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    primary: u32,
    hash_key: String,
    encryption: Vec<EncryptionKey>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct EncryptionKey {
    id: u32,
    key: String,
}

/// The loaded keys.
#[derive(Debug)]
pub struct Keys {
    /// Seals factor seeds.
    pub keyring: KeyRing,
    /// Hashes tokens and codes.
    pub hasher: SecretHasher,
    /// Whether they were generated just now for development.
    pub generated: bool,
}

fn decode(key: &str, what: &str) -> Result<Zeroizing<[u8; 32]>, ConfigError> {
    let bytes = Zeroizing::new(
        STANDARD
            .decode(key.trim())
            .map_err(|_| ConfigError(format!("keys: {what} is not base64")))?,
    );
    let array: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| ConfigError(format!("keys: {what} must be 32 bytes")))?;
    Ok(Zeroizing::new(array))
}

fn random_key() -> Result<String, ConfigError> {
    let key = KeyRing::generate_key().map_err(|e| ConfigError(format!("keys: {e}")))?;
    Ok(STANDARD.encode(key.as_ref()))
}

/// A new key file's text: one encryption key (id 1, primary) and a hash key.
pub fn generate_key_file() -> Result<Zeroizing<String>, ConfigError> {
    let file = KeyFile {
        primary: 1,
        hash_key: random_key()?,
        encryption: vec![EncryptionKey {
            id: 1,
            key: random_key()?,
        }],
    };
    let text = toml_text(&file)?;
    Ok(Zeroizing::new(format!(
        "# Tollgate keys. Keep this file secret (mode 0600) and backed up: losing it loses\n\
         # every enrolled factor. To rotate, add a new [[encryption]] key, make it primary,\n\
         # restart, re-seal, then remove the old key.\n{}",
        text.as_str()
    )))
}

fn toml_text(file: &KeyFile) -> Result<Zeroizing<String>, ConfigError> {
    // Writing a small table by hand keeps the dependency list short; the values are base64.
    let mut out = format!(
        "primary = {}\nhash_key = \"{}\"\n",
        file.primary, file.hash_key
    );
    for key in &file.encryption {
        out.push_str(&format!(
            "\n[[encryption]]\nid = {}\nkey = \"{}\"\n",
            key.id, key.key
        ));
    }
    Ok(Zeroizing::new(out))
}

/// Loads the key file, or creates a development one (mode 0600) when it is missing and
/// `generate_if_missing` is set.
pub fn load_or_generate(path: &Path, generate_if_missing: bool) -> Result<Keys, ConfigError> {
    let mut generated = false;
    if !path.exists() {
        if !generate_if_missing {
            return Err(ConfigError(format!(
                "keys.file: {} does not exist (and keys.generate_if_missing is off)",
                path.display()
            )));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                ConfigError(format!("keys.file: creating {}: {e}", parent.display()))
            })?;
        }
        write_private(path, generate_key_file()?.as_bytes())
            .map_err(|e| ConfigError(format!("keys.file: writing {}: {e}", path.display())))?;
        generated = true;
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("keys.file: reading {}: {e}", path.display())))?,
    );
    let file: KeyFile = figment::Figment::from(
        <figment::providers::Toml as figment::providers::Format>::string(&text),
    )
    .extract()
    .map_err(|e| ConfigError(format!("keys.file {}: {e}", path.display())))?;
    let mut ring = Vec::new();
    for key in &file.encryption {
        ring.push((
            key.id,
            decode(&key.key, &format!("encryption key {}", key.id))?,
        ));
    }
    let keyring =
        KeyRing::new(file.primary, ring).map_err(|e| ConfigError(format!("keys.file: {e}")))?;
    let hasher = SecretHasher::new(&decode(&file.hash_key, "hash_key")?);
    Ok(Keys {
        keyring,
        hasher,
        generated,
    })
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_file_is_private_and_loads() {
        let dir = tempfile_dir();
        let path = dir.join("nested/keys.toml");
        let keys = load_or_generate(&path, true).unwrap();
        assert!(keys.generated);
        assert_eq!(keys.keyring.primary(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // Loading again reads the same keys.
        let again = load_or_generate(&path, true).unwrap();
        assert!(!again.generated);
        let sealed = keys.keyring.seal(b"x", b"c").unwrap();
        assert_eq!(again.keyring.open(&sealed, b"c").unwrap().as_slice(), b"x");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_or_bad_files_name_the_problem() {
        let dir = tempfile_dir();
        let err = load_or_generate(&dir.join("none.toml"), false).unwrap_err();
        assert!(err.to_string().contains("keys.file"), "{err}");
        let bad = dir.join("bad.toml");
        std::fs::write(
            &bad,
            "primary = 2\nhash_key = \"AAAA\"\n[[encryption]]\nid = 1\nkey = \"AAAA\"\n",
        )
        .unwrap();
        let err = load_or_generate(&bad, false).unwrap_err().to_string();
        assert!(err.contains("32 bytes"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tollgate-keys-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
