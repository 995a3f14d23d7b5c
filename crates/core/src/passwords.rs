//! Generated user passwords and the SCRAM-SHA-256 verifiers pgplane sends to targets in their
//! place. Computing a verifier runs 4096 PBKDF2 rounds, so it happens on the blocking pool,
//! never on an async worker thread.

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use hmac::{Hmac, Mac};
use rand::distr::{Alphanumeric, SampleString};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// PBKDF2 rounds of a verifier: PostgreSQL's default (`scram_iterations`).
const SCRAM_ITERATIONS: u32 = 4096;
/// Salt length PostgreSQL uses.
const SCRAM_SALT_LEN: usize = 16;

/// Length of generated passwords: 24 alphanumerics, about 143 bits of entropy.
pub const PASSWORD_LEN: usize = 24;

/// A user's password and the verifier derived from it. Sealed together at rest.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub password: String,
    /// `SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>`, as stored in `pg_authid`.
    pub verifier: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

impl Credentials {
    /// Credentials sealed under `context` (see [`crate::model::User::credentials_context`]).
    pub fn open(sealer: &crate::secrets::Sealer, sealed: &[u8], context: &str) -> crate::error::Result<Self> {
        let opened = sealer.open(sealed, context)?;
        serde_json::from_slice(&opened).map_err(|_| crate::error::Error::Unseal)
    }
}

/// A new random password from the thread-local CSPRNG (ChaCha, seeded from the OS).
pub fn generate_password() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), PASSWORD_LEN)
}

/// The SCRAM-SHA-256 verifier of `password`, with a fresh random salt, as PostgreSQL stores it
/// (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`). CPU-heavy: call it from
/// blocking context, or use [`new_credentials`].
pub fn scram_verifier(password: &str) -> String {
    if !password.is_ascii() {
        // SASLprep (RFC 4013) may rewrite non-ASCII passwords; postgres-protocol applies it as
        // libpq does. pgplane's own passwords are ASCII and never take this way.
        return postgres_protocol::password::scram_sha_256(password.as_bytes());
    }
    let mut salt = [0u8; SCRAM_SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    verifier_with_salt(password.as_bytes(), &salt)
}

/// RFC 5802 for an ASCII password (SASLprep leaves those as they are). PBKDF2 keeps one keyed
/// HMAC state for all rounds: half the hashing of re-keying it every round.
fn verifier_with_salt(password: &[u8], salt: &[u8]) -> String {
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, SCRAM_ITERATIONS, &mut salted);
    let keyed = |label: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(&salted).expect("HMAC takes keys of any length");
        mac.update(label);
        mac.finalize().into_bytes()
    };
    let stored_key = Sha256::digest(keyed(b"Client Key"));
    let server_key = keyed(b"Server Key");
    format!(
        "SCRAM-SHA-256${SCRAM_ITERATIONS}:{}${}:{}",
        B64.encode(salt),
        B64.encode(stored_key),
        B64.encode(server_key)
    )
}

/// A new password and its verifier, computed on the blocking thread pool.
pub async fn new_credentials() -> Credentials {
    tokio::task::spawn_blocking(|| {
        let password = generate_password();
        let verifier = scram_verifier(&password);
        Credentials { password, verifier }
    })
    .await
    .expect("verifier computation does not panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_alphanumeric_and_distinct() {
        let a = generate_password();
        let b = generate_password();
        assert_eq!(a.len(), PASSWORD_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn verifiers_have_postgres_format_and_never_contain_the_password() {
        let pw = generate_password();
        let v = scram_verifier(&pw);
        assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
        assert!(!v.contains(&pw));
        assert_ne!(v, scram_verifier(&pw), "salts must differ");
    }

    #[test]
    fn verifiers_match_the_ones_postgres_protocol_computes_for_the_same_salt() {
        for pw in [generate_password(), "rotated-by-the-dba".to_string(), String::new()] {
            let theirs = postgres_protocol::password::scram_sha_256(pw.as_bytes());
            let salt = theirs.split(['$', ':']).nth(2).unwrap();
            let ours = verifier_with_salt(pw.as_bytes(), &B64.decode(salt).unwrap());
            assert_eq!(ours, theirs, "password {pw:?}");
        }
        assert!(scram_verifier("pâssword").starts_with("SCRAM-SHA-256$4096:"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = Credentials { password: "p4ss".into(), verifier: "v".into() };
        assert!(!format!("{c:?}").contains("p4ss"));
    }
}
