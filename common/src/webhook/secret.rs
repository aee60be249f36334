//! Endpoint signing secrets: `whsec_<base64 of 32 random bytes>` (the Standard Webhooks
//! format), the `v1` signature, and their storage. Admins must be able to read a secret back,
//! so it cannot be hashed: it is sealed with AES-256-GCM under `GATEHOUSE_WEBHOOK_SECRET_KEY`
//! (the endpoint id as associated data, so a sealed secret copied to another row does not
//! open), or, without that key, stored as is (version byte 0) under row-level security only.
//! Secrets never appear in logs or `Debug` output.

use aes_gcm::{
    Aes256Gcm, Nonce,
    aead::{Aead, KeyInit, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::types::EndpointId;

pub const SECRET_PREFIX: &str = "whsec_";
const SECRET_BYTES: usize = 32;
const PLAIN: u8 = 0;
const SEALED_V1: u8 = 1;
const NONCE_BYTES: usize = 12;

/// A signing secret's key bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

impl SigningSecret {
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// `whsec_…`, as tenants configure it in their receiver.
    pub fn to_whsec(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The signature of one attempt: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC takes keys of any length.
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => return String::new(),
        };
        mac.update(message_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the secret is encrypted but GATEHOUSE_WEBHOOK_SECRET_KEY is not set on this process")]
    NoKey,
    #[error(
        "the secret does not decrypt (GATEHOUSE_WEBHOOK_SECRET_KEY differs from the one that sealed it)"
    )]
    WrongKey,
    #[error("the stored secret is malformed")]
    Malformed,
}

/// Seals and opens stored secrets.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Option<Aes256Gcm>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox")
            .field("encrypted", &self.cipher.is_some())
            .finish()
    }
}

impl SecretBox {
    pub fn new(key: Option<[u8; 32]>) -> Self {
        Self {
            cipher: key.map(|k| Aes256Gcm::new(&k.into())),
        }
    }

    /// Whether new secrets are stored encrypted.
    pub fn encrypts(&self) -> bool {
        self.cipher.is_some()
    }

    /// The stored form of `secret` for `endpoint`.
    pub fn seal(&self, endpoint: EndpointId, secret: &SigningSecret) -> Vec<u8> {
        let Some(cipher) = &self.cipher else {
            let mut out = vec![PLAIN];
            out.extend_from_slice(&secret.0);
            return out;
        };
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: &secret.0,
            aad: endpoint.0.as_bytes(),
        };
        match cipher.encrypt(Nonce::from_slice(&nonce), payload) {
            Ok(sealed) => {
                let mut out = Vec::with_capacity(1 + NONCE_BYTES + sealed.len());
                out.push(SEALED_V1);
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
                out
            }
            // AES-GCM fails only on inputs far larger than a secret.
            Err(_) => Vec::new(),
        }
    }

    /// The secret stored as `stored` for `endpoint`.
    pub fn open(&self, endpoint: EndpointId, stored: &[u8]) -> Result<SigningSecret, SecretError> {
        match stored.split_first() {
            Some((&PLAIN, raw)) if !raw.is_empty() => Ok(SigningSecret(raw.to_vec())),
            Some((&SEALED_V1, rest)) if rest.len() > NONCE_BYTES => {
                let cipher = self.cipher.as_ref().ok_or(SecretError::NoKey)?;
                let (nonce, sealed) = rest.split_at(NONCE_BYTES);
                let payload = Payload {
                    msg: sealed,
                    aad: endpoint.0.as_bytes(),
                };
                cipher
                    .decrypt(Nonce::from_slice(nonce), payload)
                    .map(SigningSecret)
                    .map_err(|_| SecretError::WrongKey)
            }
            _ => Err(SecretError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip_sealed_and_plain() {
        let endpoint = EndpointId::new();
        let secret = SigningSecret::generate();
        assert!(secret.to_whsec().starts_with("whsec_"));
        assert_eq!(
            STANDARD.decode(&secret.to_whsec()[6..]).map(|b| b.len()),
            Ok(32)
        );
        let sealed_box = SecretBox::new(Some([7u8; 32]));
        let sealed = sealed_box.seal(endpoint, &secret);
        assert_eq!(sealed[0], SEALED_V1);
        assert!(!sealed.windows(32).any(|w| w == secret.0.as_slice()));
        assert_eq!(sealed_box.open(endpoint, &sealed), Ok(secret.clone()));
        // Another endpoint's row, another key, no key: refused.
        assert_eq!(
            sealed_box.open(EndpointId::new(), &sealed),
            Err(SecretError::WrongKey)
        );
        assert_eq!(
            SecretBox::new(Some([8u8; 32])).open(endpoint, &sealed),
            Err(SecretError::WrongKey)
        );
        assert_eq!(
            SecretBox::new(None).open(endpoint, &sealed),
            Err(SecretError::NoKey)
        );
        // Plain secrets (no key configured) still open once a key is configured.
        let plain = SecretBox::new(None).seal(endpoint, &secret);
        assert_eq!(sealed_box.open(endpoint, &plain), Ok(secret));
        assert_eq!(
            sealed_box.open(endpoint, &[9, 1, 2]),
            Err(SecretError::Malformed)
        );
        assert!(!format!("{:?}", SigningSecret::generate()).contains("SigningSecret(["));
    }

    /// The example of the Standard Webhooks specification (and of the reference libraries).
    #[test]
    fn signatures_match_the_specification_example() {
        let raw = STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("base64");
        let secret = SigningSecret(raw);
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
