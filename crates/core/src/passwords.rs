//! Generated user passwords and the SCRAM-SHA-256 verifiers pgplane sends to targets in their
//! place. Computing a verifier runs 4096 PBKDF2 rounds, so it happens on the blocking pool,
//! never on an async worker thread.

use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};

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

/// A new random password from the thread-local CSPRNG (ChaCha, seeded from the OS).
pub fn generate_password() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), PASSWORD_LEN)
}

/// The SCRAM-SHA-256 verifier of `password`, with a fresh random salt. CPU-heavy: call it from
/// blocking context, or use [`new_credentials`].
pub fn scram_verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
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
    fn debug_output_hides_secrets() {
        let c = Credentials { password: "p4ss".into(), verifier: "v".into() };
        assert!(!format!("{c:?}").contains("p4ss"));
    }
}
