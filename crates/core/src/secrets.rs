//! Secrets at rest: every secret pgplane must recover later (target admin passwords, the user
//! passwords the API shows) is sealed with XChaCha20-Poly1305 under a 32-byte key from the
//! configuration. The additional data binds each sealed value to the row it belongs to, so a
//! value copied into another row does not open. For key rotation a sealer may also hold the
//! previous key: it opens with either, and always seals with the current one.

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::error::{Error, Result};

/// Format version of a sealed value: `[VERSION][24-byte nonce][ciphertext + tag]`.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;

/// Seals and opens secrets with the configured key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    previous: Option<XChaCha20Poly1305>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// Builds a sealer from a base64-encoded 32-byte key (white space around it is ignored).
    pub fn from_base64(encoded: &str) -> Result<Self, String> {
        let key = B64.decode(encoded.trim()).map_err(|_| "the secret key is not valid base64".to_string())?;
        if key.len() != 32 {
            return Err(format!("the secret key must be 32 bytes (base64-encoded), not {} bytes", key.len()));
        }
        Ok(Self { cipher: XChaCha20Poly1305::new_from_slice(&key).expect("32-byte key"), previous: None })
    }

    /// Also opens values sealed under `previous` (during a key rotation).
    pub fn with_previous(mut self, previous: &Sealer) -> Self {
        self.previous = Some(previous.cipher.clone());
        self
    }

    /// A new random key, base64-encoded, for `pgplane secret-key generate` and dev setups.
    pub fn generate_key() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        B64.encode(key)
    }

    /// Encrypts `plaintext`, bound to `context` (for example "cluster_users:<id>:<name>").
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: context.as_bytes() })
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Decrypts a value sealed for the same `context`.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            return Err(Error::Unseal);
        }
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
        let payload = || Payload { msg: ciphertext, aad: context.as_bytes() };
        let nonce = XNonce::from_slice(nonce);
        self.cipher
            .decrypt(nonce, payload())
            .or_else(|e| match &self.previous {
                Some(previous) => previous.decrypt(nonce, payload()),
                None => Err(e),
            })
            .map_err(|_| Error::Unseal)
    }

    /// Seals a UTF-8 string.
    pub fn seal_str(&self, plaintext: &str, context: &str) -> Vec<u8> {
        self.seal(plaintext.as_bytes(), context)
    }

    /// Opens a value sealed by [`Sealer::seal_str`].
    pub fn open_str(&self, sealed: &[u8], context: &str) -> Result<String> {
        String::from_utf8(self.open(sealed, context)?).map_err(|_| Error::Unseal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::from_base64(&Sealer::generate_key()).unwrap()
    }

    #[test]
    fn round_trips_and_hides_the_plaintext() {
        let s = sealer();
        let sealed = s.seal_str("hunter2-secret", "ctx");
        assert!(!sealed.windows(6).any(|w| w == b"hunter"));
        assert_eq!(s.open_str(&sealed, "ctx").unwrap(), "hunter2-secret");
    }

    #[test]
    fn refuses_other_contexts_other_keys_and_tampering() {
        let s = sealer();
        let sealed = s.seal_str("pw", "row-a");
        assert!(s.open_str(&sealed, "row-b").is_err());
        assert!(sealer().open_str(&sealed, "row-a").is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(s.open_str(&tampered, "row-a").is_err());
        assert!(s.open_str(&[], "row-a").is_err());
    }

    #[test]
    fn a_rotating_sealer_opens_old_values_and_seals_with_the_new_key() {
        let old = sealer();
        let new = sealer();
        let sealed_old = old.seal_str("pw", "ctx");
        let rotating = new.clone().with_previous(&old);
        assert_eq!(rotating.open_str(&sealed_old, "ctx").unwrap(), "pw");
        let resealed = rotating.seal_str("pw", "ctx");
        assert_eq!(new.open_str(&resealed, "ctx").unwrap(), "pw");
        assert!(old.open_str(&resealed, "ctx").is_err());
    }

    #[test]
    fn rejects_malformed_keys() {
        assert!(Sealer::from_base64("not base64!").is_err());
        assert!(Sealer::from_base64(&B64.encode([0u8; 16])).is_err());
    }
}
