//! Field encryption at rest (AES-256-GCM, envelope-ready: the key id travels with the value)
//! and small keyed-hash helpers.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;

/// A named 256-bit key.
#[derive(Clone)]
pub struct FieldKey {
    pub id: String,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for FieldKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FieldKey({})", self.id)
    }
}

impl FieldKey {
    /// Parses `KEYID:BASE64` (32 bytes once decoded).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (id, b64) = s.split_once(':').ok_or("expected KEYID:BASE64")?;
        if id.is_empty() || id.len() > 32 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err("key id must be 1-32 letters, digits, - or _".into());
        }
        let raw = B64.decode(b64.trim()).map_err(|_| "key is not valid base64".to_string())?;
        if raw.len() != 32 {
            return Err(format!("key must be 32 bytes, got {}", raw.len()));
        }
        let cipher = Aes256Gcm::new_from_slice(&raw).map_err(|_| "bad key".to_string())?;
        Ok(Self { id: id.to_string(), cipher })
    }

    /// A random key (tests, first-run dev setups).
    pub fn generate(id: &str) -> Self {
        Self::parse(&Self::generate_encoded(id)).unwrap_or_else(|_| unreachable!("generated key is valid"))
    }

    /// A random key in the `KEYID:BASE64` form the configuration takes.
    pub fn generate_encoded(id: &str) -> String {
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        format!("{id}:{}", B64.encode(raw))
    }

    /// `v1:KEYID:BASE64(nonce || ciphertext)`.
    pub fn encrypt(&self, plaintext: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
            .unwrap_or_else(|_| unreachable!("AES-GCM encryption of a string cannot fail"));
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("v1:{}:{}", self.id, B64.encode(out))
    }

    /// Reverses [`encrypt`](Self::encrypt); fails on another key id or tampering.
    pub fn decrypt(&self, stored: &str) -> Result<String, String> {
        let mut parts = stored.splitn(3, ':');
        let (v, id, body) = (parts.next(), parts.next(), parts.next());
        if v != Some("v1") {
            return Err("unknown envelope version".into());
        }
        if id != Some(self.id.as_str()) {
            return Err(format!("value was encrypted with key `{}`", id.unwrap_or_default()));
        }
        let raw = B64.decode(body.unwrap_or_default()).map_err(|_| "corrupt value".to_string())?;
        if raw.len() < 12 + 16 {
            return Err("corrupt value".into());
        }
        let (nonce, ct) = raw.split_at(12);
        let pt = self.cipher.decrypt(Nonce::from_slice(nonce), ct).map_err(|_| "decryption failed".to_string())?;
        String::from_utf8(pt).map_err(|_| "corrupt value".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let k = FieldKey::generate("k1");
        let c = k.encrypt("123-45-6789");
        assert!(!c.contains("6789"));
        assert_eq!(k.decrypt(&c).unwrap(), "123-45-6789");
        let other = FieldKey::generate("k1");
        assert!(other.decrypt(&c).is_err());
        assert!(FieldKey::parse("k:short").is_err());
    }
}
