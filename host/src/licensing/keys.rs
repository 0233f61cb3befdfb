//! Secrets handed out once and stored only as hashes: LeanSync Keys and API
//! tokens. 256 bits from the OS RNG; SHA-256 at rest (the secrets are
//! random, so a fast hash is enough); constant-time comparison.

use std::fmt;

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A freshly generated secret; `Display` shows it (once, to its owner),
/// `Debug` never does.
pub struct Secret(String);

impl Secret {
    /// Generates `prefix_` + 43 base64url characters (256 bits).
    pub fn generate(prefix: &str) -> Self {
        let mut bytes = [0u8; 32];
        // Straight from the OS RNG: 256 bits, at least 128 are required.
        getrandom::fill(&mut bytes).expect("the OS random number generator is unavailable");
        Secret(format!(
            "{prefix}_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its hash, for storage.
    pub fn hash(&self) -> String {
        hash(&self.0)
    }

    /// A masked form for listings: prefix and last four characters.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// Hex SHA-256 of a presented secret.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Masks a secret for display: `lsk_…AbCd`.
pub fn mask(secret: &str) -> String {
    let prefix = secret.split('_').next().unwrap_or("");
    let tail: String = secret
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{prefix}_…{tail}")
}

/// Constant-time equality of two hashes.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_never_debug_printed() {
        let a = Secret::generate("lsk");
        let b = Secret::generate("lsk");
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with("lsk_") && a.expose().len() == 4 + 43);
        assert_eq!(format!("{a:?}"), "Secret(****)");
        assert!(same(&a.hash(), &hash(a.expose())));
        assert!(!same(&a.hash(), &b.hash()));
        assert!(a.masked().starts_with("lsk_…") && a.masked().len() < 12);
    }
}
