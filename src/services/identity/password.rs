//! Passwords: ASVS 6.2 rules (8–128 characters, no composition rules, not one of the 10,000
//! most common) and argon2id (m=19456 KiB, t=2, p=1), hashed on the blocking pool with a
//! bound on how many run at once so a burst of logins cannot exhaust memory or stall the
//! async workers.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use super::IdentityError;

pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 128;

static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("common-passwords.txt").lines().map(str::trim).filter(|l| !l.is_empty()).collect());

/// A hash that no password matches, verified against for unknown emails so that they cost
/// the same time as a wrong password.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| hash_now("correct horse battery staple dummy"));

fn argon() -> Argon2<'static> {
    let params = Params::new(19_456, 2, 1, None).unwrap_or_else(|_| unreachable!("static argon2 parameters are valid"));
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_now(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    argon()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_else(|_| unreachable!("hashing with valid parameters cannot fail"))
}

/// Checks a new password against the rules; the error names the field.
pub fn validate(password: &str, field: &str) -> Result<(), IdentityError> {
    let weak = |why: String| IdentityError::WeakPassword { field: field.to_string(), why };
    let n = password.chars().count();
    if n < MIN_LEN {
        return Err(weak(format!("must be at least {MIN_LEN} characters")));
    }
    if n > MAX_LEN {
        return Err(weak(format!("must be at most {MAX_LEN} characters")));
    }
    if COMMON.contains(password) || COMMON.contains(password.to_lowercase().as_str()) {
        return Err(weak("is one of the most common passwords; choose another".into()));
    }
    Ok(())
}

/// Bounds concurrent argon2 work (each hash holds 19 MiB).
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
}

impl Default for Hasher {
    fn default() -> Self {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self { permits: Arc::new(Semaphore::new(n * 2)) }
    }
}

impl Hasher {
    pub async fn hash(&self, password: String) -> Result<String, IdentityError> {
        let _permit = self.permits.acquire().await.map_err(IdentityError::internal)?;
        tokio::task::spawn_blocking(move || hash_now(&password)).await.map_err(IdentityError::internal)
    }

    /// Verifies `password` against `hash`, or against a dummy hash when there is no account.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, IdentityError> {
        let _permit = self.permits.acquire().await.map_err(IdentityError::internal)?;
        tokio::task::spawn_blocking(move || {
            let real = hash.is_some();
            let stored = hash.unwrap_or_else(|| DUMMY_HASH.clone());
            let ok = PasswordHash::new(&stored)
                .map(|h| argon().verify_password(password.as_bytes(), &h).is_ok())
                .unwrap_or(false);
            ok && real
        })
        .await
        .map_err(IdentityError::internal)
    }

    /// Builds the dummy hash ahead of the first login.
    pub fn warm_up() {
        LazyLock::force(&DUMMY_HASH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(validate("short", "password").is_err());
        assert!(validate("password", "password").is_err());
        assert!(validate("qwertyuiop", "password").is_err());
        assert!(validate("a perfectly fine passphrase", "password").is_ok());
        assert!(validate(&"x".repeat(64), "password").is_ok());
        assert!(validate(&"x".repeat(129), "password").is_err());
        assert_eq!(COMMON.len(), 10_000);
    }

    #[test]
    fn hash_carries_the_parameters() {
        let h = hash_now("a perfectly fine passphrase");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
    }
}
