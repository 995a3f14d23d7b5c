//! API tokens: `pgp_<id>_<secret>`. The id finds the row; the whole token is checked against an
//! argon2id hash, the only form in which a token is stored. Hashing and verification are
//! CPU-heavy and run on the blocking pool.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::distr::{Alphanumeric, SampleString};

const PREFIX: &str = "pgp_";
const ID_LEN: usize = 12;
const SECRET_LEN: usize = 40;

/// A freshly issued token: shown once, then only its hash is kept.
pub struct IssuedToken {
    pub token_id: String,
    pub token: String,
    pub hash: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IssuedToken({})", self.token_id)
    }
}

/// Makes a new token and its argon2id hash (blocking: call from a blocking context).
pub fn issue() -> IssuedToken {
    let mut rng = rand::rng();
    let token_id = Alphanumeric.sample_string(&mut rng, ID_LEN).to_lowercase();
    let secret = Alphanumeric.sample_string(&mut rng, SECRET_LEN);
    let token = format!("{PREFIX}{token_id}_{secret}");
    let salt = SaltString::from_b64(&base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        rand::random::<[u8; 16]>(),
    ))
    .expect("16 random bytes make a valid salt");
    let hash = Argon2::default()
        .hash_password(token.as_bytes(), &salt)
        .expect("argon2 with default parameters does not fail")
        .to_string();
    IssuedToken { token_id, token, hash }
}

/// The row id inside a well-formed token, or None for anything else.
pub fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = id.len() == ID_LEN
        && secret.len() == SECRET_LEN
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && secret.bytes().all(|b| b.is_ascii_alphanumeric());
    well_formed.then_some(id)
}

/// Checks `token` against a stored hash in constant time (blocking).
pub fn verify(token: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| Argon2::default().verify_password(token.as_bytes(), &parsed).is_ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_others_do_not() {
        let t = issue();
        assert_eq!(token_id(&t.token), Some(t.token_id.as_str()));
        assert!(t.hash.starts_with("$argon2id$"));
        assert!(!t.hash.contains(&t.token));
        assert!(verify(&t.token, &t.hash));
        let mut wrong = t.token.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'x' { 'y' } else { 'x' });
        assert!(!verify(&wrong, &t.hash));
        assert!(!verify(&t.token, "garbage"));
    }

    #[test]
    fn malformed_tokens_have_no_id() {
        for bad in [
            "",
            "pgp_",
            "pgp_abc_def",
            "Bearer x",
            "pgp_ABCDEFGHIJKL_0123456789012345678901234567890123456789",
        ] {
            assert_eq!(token_id(bad), None, "{bad}");
        }
    }
}
