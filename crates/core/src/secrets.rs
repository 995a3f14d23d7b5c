//! Secrets at rest: every secret pgplane must recover later (target admin passwords, the user
//! passwords the API shows) is sealed with XChaCha20-Poly1305 under a 32-byte key from the
//! configuration. The additional data binds each sealed value to the row it belongs to, so a
//! value copied into another row does not open. Each sealed value names its key by a key id (a
//! one-way digest of the key), so that key rotation can find, in SQL, every value not yet under
//! the new key. For key rotation a sealer may also hold the previous key: it opens with either,
//! and always seals with the current one.

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Format version of a sealed value: `[VERSION][8-byte key id][24-byte nonce][ciphertext + tag]`.
const VERSION: u8 = 2;
/// The first format, `[1][24-byte nonce][ciphertext + tag]`, which does not name its key; still
/// opened (with either key), never written.
const VERSION_WITHOUT_KEY_ID: u8 = 1;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 24;

/// One key: the cipher and the id that sealed values carry.
#[derive(Clone)]
struct Key {
    id: [u8; KEY_ID_LEN],
    cipher: XChaCha20Poly1305,
}

impl Key {
    fn new(key: &[u8]) -> Self {
        let digest = Sha256::new().chain_update(b"pgplane sealing key id\0").chain_update(key).finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Self { id, cipher: XChaCha20Poly1305::new_from_slice(key).expect("32-byte key") }
    }
}

/// Seals and opens secrets with the configured key.
#[derive(Clone)]
pub struct Sealer {
    current: Key,
    previous: Option<Key>,
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
        Ok(Self { current: Key::new(&key), previous: None })
    }

    /// Also opens values sealed under `previous` (during a key rotation).
    pub fn with_previous(mut self, previous: &Sealer) -> Self {
        self.previous = Some(previous.current.clone());
        self
    }

    /// How every value sealed with the current key begins (format version and key id): a
    /// value that begins otherwise is under another key, or in the first format.
    pub fn sealed_prefix(&self) -> Vec<u8> {
        let mut prefix = vec![VERSION];
        prefix.extend_from_slice(&self.current.id);
        prefix
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
            .current
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: context.as_bytes() })
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        let mut out = self.sealed_prefix();
        out.reserve(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Decrypts a value sealed for the same `context`.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>> {
        let keys = std::iter::once(&self.current).chain(&self.previous);
        let (candidates, rest): (Vec<&Key>, &[u8]) = match sealed.split_first() {
            Some((&VERSION, rest)) if rest.len() >= KEY_ID_LEN => {
                let (id, rest) = rest.split_at(KEY_ID_LEN);
                (keys.filter(|k| k.id == id).collect(), rest)
            }
            Some((&VERSION_WITHOUT_KEY_ID, rest)) => (keys.collect(), rest),
            _ => return Err(Error::Unseal),
        };
        if rest.len() < NONCE_LEN {
            return Err(Error::Unseal);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        candidates
            .into_iter()
            .find_map(|key| {
                let payload = Payload { msg: ciphertext, aad: context.as_bytes() };
                key.cipher.decrypt(XNonce::from_slice(nonce), payload).ok()
            })
            .ok_or(Error::Unseal)
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
    fn a_sealed_value_names_its_key_and_the_first_format_still_opens() {
        let old = sealer();
        let new = sealer();
        let sealed = new.seal_str("pw", "ctx");
        assert!(sealed.starts_with(&new.sealed_prefix()));
        assert!(!sealed.starts_with(&old.sealed_prefix()));
        // The first format: version 1, no key id.
        let first = {
            let mut nonce = [0u8; NONCE_LEN];
            rand::rng().fill_bytes(&mut nonce);
            let payload = Payload { msg: b"pw".as_slice(), aad: b"ctx".as_slice() };
            let ciphertext = old.current.cipher.encrypt(XNonce::from_slice(&nonce), payload).unwrap();
            [&[VERSION_WITHOUT_KEY_ID][..], &nonce, &ciphertext].concat()
        };
        assert_eq!(old.open_str(&first, "ctx").unwrap(), "pw");
        assert_eq!(new.clone().with_previous(&old).open_str(&first, "ctx").unwrap(), "pw");
        assert!(new.open_str(&first, "ctx").is_err());
    }

    #[test]
    fn rejects_malformed_keys() {
        assert!(Sealer::from_base64("not base64!").is_err());
        assert!(Sealer::from_base64(&B64.encode([0u8; 16])).is_err());
    }
}
