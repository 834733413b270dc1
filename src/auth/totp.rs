//! TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, ±1 step of skew) and recovery codes. A
//! code's time step is remembered so each code works once.

use chrono::{DateTime, Utc};
use rand::Rng;
use totp_rs::{Algorithm, Secret, TOTP};

pub const DIGITS: usize = 6;
pub const STEP_SECS: u64 = 30;
pub const RECOVERY_CODES: usize = 10;

/// A new random 160-bit secret, base32.
pub fn new_secret() -> String {
    let mut raw = [0u8; 20];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut raw);
    Secret::Raw(raw.to_vec()).to_encoded().to_string()
}

fn totp(secret_b32: &str, account: &str, issuer: &str) -> Option<TOTP> {
    let bytes = Secret::Encoded(secret_b32.to_string()).to_bytes().ok()?;
    TOTP::new_unchecked(Algorithm::SHA1, DIGITS, 1, STEP_SECS, bytes, Some(issuer.to_string()), account.to_string())
        .into()
}

/// The `otpauth://` URI authenticator apps scan.
pub fn uri(secret_b32: &str, account: &str, issuer: &str) -> Option<String> {
    Some(totp(secret_b32, account, issuer)?.get_url())
}

/// The code for a time (tests and clients).
pub fn code_at(secret_b32: &str, at: DateTime<Utc>) -> Option<String> {
    Some(totp(secret_b32, "x", "Coherency")?.generate(at.timestamp().max(0) as u64))
}

/// If `code` is valid at `now` (±1 step), the step it belongs to.
pub fn matching_step(secret_b32: &str, code: &str, now: DateTime<Utc>) -> Option<i64> {
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = totp(secret_b32, "x", "Coherency")?;
    let step = now.timestamp() / STEP_SECS as i64;
    (step - 1..=step + 1).find(|s| {
        let expected = t.generate((*s as u64) * STEP_SECS);
        subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), code.as_bytes()).into()
    })
}

/// Ten fresh recovery codes, `xxxxx-xxxxx` (lowercase letters and digits, no look-alikes).
pub fn new_recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    (0..RECOVERY_CODES)
        .map(|_| {
            let s: String = (0..10).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
            format!("{}-{}", &s[..5], &s[5..])
        })
        .collect()
}

/// The form a recovery code is hashed in (case and dashes ignored).
pub fn normalise_recovery(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_code_matches_its_step_only() {
        let s = new_secret();
        let now = Utc::now();
        let code = code_at(&s, now).unwrap();
        assert_eq!(matching_step(&s, &code, now), Some(now.timestamp() / 30));
        assert_eq!(matching_step(&s, &code, now + chrono::Duration::minutes(5)), None);
        assert_eq!(matching_step(&s, "12345", now), None);
        assert!(uri(&s, "a@b.c", "Coherency").unwrap().starts_with("otpauth://totp/"));
    }
}
