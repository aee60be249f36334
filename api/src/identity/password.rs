//! Password hashing and verification (argon2id) and the password policy.
//!
//! Security choices:
//! - **argon2id**, version 0x13, with the OWASP Password Storage Cheat Sheet's baseline:
//!   **m = 19 MiB (19 456 KiB), t = 2 iterations, p = 1 lane**, 32-byte output and a random
//!   16-byte salt from the OS-seeded CSPRNG. Hashes are stored as PHC strings
//!   (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), so parameters can be raised later:
//!   verification always uses the parameters recorded in the stored hash.
//! - Hashing is CPU- and memory-heavy (tens of ms), so it always runs on tokio's blocking
//!   pool (`spawn_blocking`), never on an async worker thread.
//! - Verification goes through argon2's `PasswordVerifier`, whose final comparison is
//!   constant-time.
//! - **Unknown users cost the same as known ones**: `verify(_, None)` runs a full
//!   verification against a fixed dummy hash (made once per process with the same
//!   parameters) and returns `false`, so response timing does not reveal which usernames
//!   exist.
//! - Policy follows NIST SP 800-63B: a length range only, no composition rules.

use std::sync::OnceLock;

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::{self, SaltString},
};
use rand::RngCore;

/// Shortest accepted password, in Unicode scalar values.
pub const MIN_CHARS: usize = 12;
/// Longest accepted password, in Unicode scalar values. Also bounds the work an attacker can
/// make `verify` do: longer candidates cannot match any stored hash and are not hashed.
pub const MAX_CHARS: usize = 256;

/// Argon2 memory cost, KiB (19 MiB).
const M_COST_KIB: u32 = 19 * 1024;
/// Argon2 iterations.
const T_COST: u32 = 2;
/// Argon2 lanes.
const P_COST: u32 = 1;
/// Salt length in bytes (argon2's recommended 16).
const SALT_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Argon2 refused the input or parameters (should not happen with our constants).
    #[error("password hashing failed: {0}")]
    Hash(password_hash::Error),
    /// The stored hash is not a valid PHC string (corrupt row or foreign format).
    #[error("stored password hash is malformed: {0}")]
    MalformedHash(password_hash::Error),
    /// The blocking task panicked or was cancelled.
    #[error("password hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn hasher() -> Result<Argon2<'static>, PasswordError> {
    let params =
        Params::new(M_COST_KIB, T_COST, P_COST, None).map_err(|e| PasswordError::Hash(e.into()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_blocking(password: &[u8]) -> Result<String, PasswordError> {
    let mut salt_bytes = [0u8; SALT_BYTES];
    // `rand::rng()` is a ChaCha-based CSPRNG seeded (and periodically reseeded) from the OS.
    rand::rng().fill_bytes(&mut salt_bytes);
    let salt = SaltString::encode_b64(&salt_bytes).map_err(PasswordError::Hash)?;
    let hash = hasher()?
        .hash_password(password, &salt)
        .map_err(PasswordError::Hash)?;
    Ok(hash.to_string())
}

/// A PHC hash of a random password nobody knows, with the current parameters; computed once.
fn dummy_hash() -> Result<&'static str, PasswordError> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash);
    }
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let hash = hash_blocking(&secret)?;
    // A concurrent first caller may have won the race; either value is fine.
    Ok(DUMMY.get_or_init(|| hash))
}

fn verify_blocking(password: &[u8], phc: &str) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(phc).map_err(PasswordError::MalformedHash)?;
    // `Argon2::default()` is only the carrier: verification re-hashes with the algorithm,
    // version and parameters recorded in `parsed`.
    match Argon2::default().verify_password(password, &parsed) {
        Ok(()) => Ok(true),
        Err(password_hash::Error::Password) => Ok(false),
        Err(e) => Err(PasswordError::Hash(e)),
    }
}

/// Hashes `password` with argon2id (m = 19 MiB, t = 2, p = 1) and a random salt, returning
/// the PHC string to store. Runs on the blocking pool.
///
/// Does not check the policy: call [`check_policy`] first where a new password is chosen.
pub async fn hash(password: String) -> Result<String, PasswordError> {
    tokio::task::spawn_blocking(move || hash_blocking(password.as_bytes())).await?
}

/// Checks `password` against the stored PHC hash, in constant time, on the blocking pool.
///
/// `phc = None` means the user does not exist (or has no password): a full verification runs
/// against a dummy hash so that the caller's response time does not depend on it, and the
/// result is always `false`. A password longer than [`MAX_CHARS`] can never have been set,
/// so it is likewise checked against the dummy hash only (bounding the work per attempt)
/// and rejected.
///
/// Errors only for a malformed stored hash or a failed blocking task; a wrong password is
/// `Ok(false)`.
pub async fn verify(password: String, phc: Option<String>) -> Result<bool, PasswordError> {
    tokio::task::spawn_blocking(move || {
        let oversized = password.chars().count() > MAX_CHARS;
        match phc {
            Some(phc) if !oversized => verify_blocking(password.as_bytes(), &phc),
            _ => {
                // Same cost as a real verification; the outcome is irrelevant.
                let probe: &[u8] = if oversized { b"" } else { password.as_bytes() };
                let _ = verify_blocking(probe, dummy_hash()?)?;
                Ok(false)
            }
        }
    })
    .await?
}

/// The password policy for newly chosen passwords (NIST SP 800-63B): between
/// [`MIN_CHARS`] and [`MAX_CHARS`] characters (Unicode scalar values), nothing else — no
/// composition rules, no forced character classes. The error is a human-readable sentence
/// suitable as a 422 `detail`.
pub fn check_policy(password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_CHARS {
        return Err(format!(
            "password must be at least {MIN_CHARS} characters long (got {chars})"
        ));
    }
    if chars > MAX_CHARS {
        return Err(format!(
            "password must be at most {MAX_CHARS} characters long (got {chars})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip() {
        let phc = hash("correct horse battery staple".into()).await.unwrap();
        assert!(
            verify("correct horse battery staple".into(), Some(phc))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn wrong_password_is_false() {
        let phc = hash("correct horse battery staple".into()).await.unwrap();
        assert!(
            !verify("correct horse battery stapler".into(), Some(phc))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn unknown_user_is_false() {
        assert!(!verify("anything at all here".into(), None).await.unwrap());
        // The dummy hash itself is a valid argon2id hash with the current parameters.
        let dummy = dummy_hash().unwrap();
        assert!(
            dummy.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{dummy}"
        );
        // And no guessable password matches it.
        assert!(!verify(String::new(), None).await.unwrap());
    }

    #[tokio::test]
    async fn phc_format_and_random_salt() {
        let a = hash("same password twice".into()).await.unwrap();
        let b = hash("same password twice".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "salts must differ");
    }

    #[tokio::test]
    async fn oversized_password_never_matches() {
        let long = "x".repeat(MAX_CHARS + 1);
        let phc = hash(long.clone()).await.unwrap();
        assert!(!verify(long, Some(phc)).await.unwrap());
    }

    #[tokio::test]
    async fn malformed_stored_hash_is_an_error() {
        let err = verify("whatever password".into(), Some("not-a-phc".into()))
            .await
            .unwrap_err();
        assert!(matches!(err, PasswordError::MalformedHash(_)), "{err}");
    }

    #[tokio::test]
    async fn verifies_hashes_with_other_parameters() {
        // Stored hashes keep their own parameters; raising ours later must not break them.
        let params = Params::new(8 * 1024, 1, 1, None).unwrap();
        let weak = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        let phc = weak
            .hash_password(b"legacy password!", &salt)
            .unwrap()
            .to_string();
        assert!(
            verify("legacy password!".into(), Some(phc.clone()))
                .await
                .unwrap()
        );
        assert!(!verify("legacy password?".into(), Some(phc)).await.unwrap());
    }

    #[test]
    fn policy_bounds() {
        assert!(check_policy(&"a".repeat(11)).is_err());
        assert!(check_policy(&"a".repeat(12)).is_ok());
        assert!(check_policy(&"a".repeat(256)).is_ok());
        assert!(check_policy(&"a".repeat(257)).is_err());
        // Characters, not bytes: 12 multi-byte characters are enough.
        assert!(check_policy(&"é".repeat(12)).is_ok());
        assert!(check_policy(&"é".repeat(11)).is_err());
        // No composition rules.
        assert!(check_policy("aaaaaaaaaaaa").is_ok());
        assert!(check_policy("               ").is_ok());
        let msg = check_policy("short").unwrap_err();
        assert!(msg.contains("at least 12"), "{msg}");
        let msg = check_policy(&"a".repeat(300)).unwrap_err();
        assert!(msg.contains("at most 256"), "{msg}");
    }
}
