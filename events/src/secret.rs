//! Secrets at rest: authenticated encryption (ChaCha20-Poly1305) under one 32-byte key
//! from configuration (`SHIPLOG_SECRET_KEY`). A sealed value is a versioned string,
//! `sealed:v1:<base64 of nonce ‖ ciphertext+tag>`, so it can sit in any JSON payload and
//! a later key or cipher can be told apart by its prefix.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::TryRngCore;
use rand::rngs::OsRng;

const PREFIX: &str = "sealed:v1:";
const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "secret key must be 32 bytes, written as 64 hex digits or base64 (e.g. `openssl rand -hex 32`)"
    )]
    BadKey,
    #[error("value is not a sealed secret")]
    NotSealed,
    /// Wrong key, or the value was altered: the tag does not verify.
    #[error("sealed secret cannot be opened with this key")]
    Undecryptable,
}

/// The key that seals and opens secrets. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct SecretKey {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> SecretKey {
        SecretKey {
            cipher: ChaCha20Poly1305::new(&Key::from(bytes)),
        }
    }

    /// Reads a configured key: 64 hex digits, or base64 (standard alphabet) of 32 bytes.
    pub fn from_config(value: &str) -> Result<SecretKey, SecretError> {
        let value = value.trim();
        let bytes = if value.len() == 2 * KEY_LEN && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(value).map_err(|_| SecretError::BadKey)?
        } else {
            B64.decode(value).map_err(|_| SecretError::BadKey)?
        };
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|_| SecretError::BadKey)?;
        Ok(SecretKey::from_bytes(bytes))
    }

    /// A fresh random key (tests, and `openssl rand -hex 32` for operators).
    pub fn generate() -> SecretKey {
        let mut bytes = [0u8; KEY_LEN];
        OsRng
            .try_fill_bytes(&mut bytes)
            .expect("the OS random source works");
        SecretKey::from_bytes(bytes)
    }

    /// Encrypts `plain` under a fresh random nonce: sealing twice gives two strings.
    pub fn seal(&self, plain: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng
            .try_fill_bytes(&mut nonce)
            .expect("the OS random source works");
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), plain.as_bytes())
            .expect("ChaCha20-Poly1305 encrypts any length we store");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", B64.encode(out))
    }

    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        let encoded = sealed.strip_prefix(PREFIX).ok_or(SecretError::NotSealed)?;
        let bytes = B64.decode(encoded).map_err(|_| SecretError::NotSealed)?;
        if bytes.len() < NONCE_LEN {
            return Err(SecretError::NotSealed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SecretError::NotSealed)?;
        let plain = self
            .cipher
            .decrypt(&Nonce::from(nonce), ciphertext)
            .map_err(|_| SecretError::Undecryptable)?;
        String::from_utf8(plain).map_err(|_| SecretError::Undecryptable)
    }
}

/// Whether a stored value is a sealed secret (of any key).
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips_and_hides_the_value() {
        let key = SecretKey::generate();
        let sealed = key.seal("hunter2-token");
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("hunter2"));
        assert_ne!(sealed, key.seal("hunter2-token"), "fresh nonce each time");
        assert_eq!(key.open(&sealed).unwrap(), "hunter2-token");
    }

    #[test]
    fn another_key_or_an_altered_value_does_not_open() {
        let key = SecretKey::generate();
        let sealed = key.seal("s3cret");
        assert_eq!(
            SecretKey::generate().open(&sealed),
            Err(SecretError::Undecryptable)
        );
        let mut bytes = B64.decode(&sealed[PREFIX.len()..]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let altered = format!("{PREFIX}{}", B64.encode(bytes));
        assert_eq!(key.open(&altered), Err(SecretError::Undecryptable));
        assert_eq!(key.open("plain"), Err(SecretError::NotSealed));
        assert_eq!(key.open("sealed:v1:!!"), Err(SecretError::NotSealed));
    }

    #[test]
    fn keys_are_read_from_hex_or_base64_of_32_bytes() {
        let hex_key = "00".repeat(32);
        let b64_key = B64.encode([0u8; 32]);
        let sealed = SecretKey::from_config(&hex_key).unwrap().seal("x");
        assert_eq!(
            SecretKey::from_config(&b64_key).unwrap().open(&sealed),
            Ok("x".into())
        );
        for bad in ["", "abc", &"00".repeat(16), &B64.encode([0u8; 31])] {
            assert_eq!(
                SecretKey::from_config(bad).unwrap_err(),
                SecretError::BadKey,
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = SecretKey::from_config(&"ab".repeat(32)).unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("abab"), "{shown}");
        assert!(shown.contains("redacted"));
    }
}
