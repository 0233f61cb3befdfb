//! Encryption at rest for configuration secrets (telephony passwords,
//! connector API tokens): XChaCha20-Poly1305 with a key from the data dir.

use std::path::Path;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

/// Encrypts and decrypts secrets with the host's key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    /// Loads `path` (32 raw bytes), creating it with a random key (mode 0600)
    /// if it does not exist; refuses a file others can read or that cannot
    /// be read, and never replaces one.
    pub fn from_key_file(path: &Path) -> anyhow::Result<Self> {
        let key = crate::store::keyfile::load_or_create(path, "secret key")?;
        Ok(Self::from_key(&key))
    }

    /// A sealer from raw key bytes (32).
    pub fn from_key(key: &[u8]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(Key::from_slice(key)),
        }
    }

    /// Encrypts `plain` to base64 (nonce ‖ ciphertext).
    pub fn seal(&self, plain: &str) -> String {
        let mut nonce = [0u8; 24];
        rand::fill(&mut nonce);
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plain.as_bytes())
            .expect("encryption cannot fail for in-memory data");
        let mut out = nonce.to_vec();
        out.extend(ct);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// Decrypts what [`Sealer::seal`] produced.
    pub fn open(&self, sealed: &str) -> anyhow::Result<String> {
        let raw = base64::engine::general_purpose::STANDARD.decode(sealed)?;
        anyhow::ensure!(raw.len() > 24, "sealed secret too short");
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(&raw[..24]), &raw[24..])
            .map_err(|_| anyhow::anyhow!("secret cannot be decrypted with this host's key"))?;
        Ok(String::from_utf8(plain)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let s = Sealer::from_key(&[7u8; 32]);
        let sealed = s.seal("hunter2");
        assert!(!sealed.contains("hunter2"));
        assert_eq!(s.open(&sealed).unwrap(), "hunter2");
        assert!(Sealer::from_key(&[8u8; 32]).open(&sealed).is_err());
    }
}
