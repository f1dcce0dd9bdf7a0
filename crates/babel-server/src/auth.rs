//! Passwords and tokens.
//!
//! Passwords are hashed with argon2id (a PHC string with its own salt) and
//! never kept in clear. Session tokens are 256 random bits from the OS, sent
//! once to the client as base64url text; the server keeps only their SHA-256,
//! which is enough for a secret of that much entropy and cheap to check on
//! every request. Everything here is CPU-bound: run password work on the
//! blocking pool, never on a runtime thread.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::store::TokenHash;

/// argon2id cost settings (defaults: OWASP's 19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct PasswordCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
}

impl PasswordCost {
    /// The cheapest cost argon2 accepts here: for demos and tests that
    /// sign many people up, never for real accounts.
    pub const CHEAP: PasswordCost = PasswordCost { memory_kib: 256, iterations: 1 };
}

impl Default for PasswordCost {
    fn default() -> Self {
        Self { memory_kib: Params::DEFAULT_M_COST, iterations: Params::DEFAULT_T_COST }
    }
}

/// Something went wrong hashing (bad cost settings or no OS randomness).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

fn hasher(cost: PasswordCost) -> Result<Argon2<'static>, HashError> {
    let params = Params::new(cost.memory_kib, cost.iterations, 1, None).map_err(|e| HashError(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password into a PHC string.
pub fn hash_password(password: &str, cost: PasswordCost) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| HashError(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError(e.to_string()))?;
    Ok(hasher(cost)?.hash_password(password.as_bytes(), &salt).map_err(|e| HashError(e.to_string()))?.to_string())
}

/// Checks a password against a PHC string. The cost is read from the string,
/// so hashes made under older settings keep working.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A freshly minted session token: the text for the client, the hash for us.
pub struct NewToken {
    /// What the client gets (43 base64url characters).
    pub text: String,
    /// What the store keeps.
    pub hash: TokenHash,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewToken(<redacted>)")
    }
}

/// Makes a new random token.
pub fn new_token() -> Result<NewToken, HashError> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| HashError(e.to_string()))?;
    let text = URL_SAFE_NO_PAD.encode(raw);
    let hash = hash_token(&text);
    Ok(NewToken { text, hash })
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: PasswordCost = PasswordCost { memory_kib: 64, iterations: 1 };

    #[test]
    fn password_round_trip() {
        let h = hash_password("correct horse", CHEAP).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains("correct horse"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsE", &h));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn salts_differ() {
        assert_ne!(hash_password("pw", CHEAP).unwrap(), hash_password("pw", CHEAP).unwrap());
    }

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_eq!(a.text.len(), 43);
        assert_ne!(a.text, b.text);
        assert_eq!(hash_token(&a.text), a.hash);
        assert_ne!(a.hash, b.hash);
    }
}
