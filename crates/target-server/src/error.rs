//! Errors from talking to a target server. Their text is shown through the API, so it carries
//! PostgreSQL's message and SQLSTATE but never a statement (which could hold a verifier).

/// A failure to reach or change a target.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TargetError {
    /// The server could not be reached or refused the login.
    #[error("cannot connect to the target: {0}")]
    Connect(String),
    /// The target is somewhere pgplane may not connect to (or the host is malformed); nothing
    /// was sent.
    #[error("{0}")]
    Refused(String),
    /// The target accepted the connection but did not answer in time.
    #[error("the target did not answer within {0} s")]
    Stalled(u64),
    /// Every session pgplane may hold on the target's server was taken for longer than the
    /// caller may wait (see [`crate::budget`]).
    #[error("{0}")]
    Busy(String),
    /// TLS to the target cannot be set up as asked.
    #[error("TLS: {0}")]
    Tls(String),
    /// A statement failed on the server.
    #[error("{message} (SQLSTATE {code})")]
    Sql { code: String, message: String },
    /// A stored secret could not be opened, or the metadata store failed.
    #[error("{0}")]
    Internal(String),
}

impl TargetError {
    /// The SQLSTATE of a failed statement.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            TargetError::Sql { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl From<tokio_postgres::Error> for TargetError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => {
                TargetError::Sql { code: db.code().code().to_string(), message: redact(db.message()) }
            }
            None if crate::wire::refusal_in(&e).is_some() => {
                TargetError::Refused(crate::wire::refusal_in(&e).expect("just found").to_string())
            }
            // tokio-postgres's words when the required channel binding did not happen.
            None if e.to_string().contains("did not use channel binding") => {
                TargetError::Refused(NO_CHANNEL_BINDING.to_string())
            }
            None => {
                // tokio-postgres keeps the cause (refused, TLS, DNS) in the source chain.
                let mut message = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    message.push_str(": ");
                    message.push_str(&cause.to_string());
                    source = cause.source();
                }
                TargetError::Connect(redact(&message))
            }
        }
    }
}

/// Why a TLS login was refused before anything was sent.
const NO_CHANNEL_BINDING: &str = "the target did not authenticate pgplane with SCRAM-SHA-256-PLUS (channel \
     binding), which pgplane requires over TLS: it asked for the password in cleartext or as MD5, \
     offered SCRAM without channel binding, or let pgplane in without a password exchange; nothing \
     was sent (use scram-sha-256 in pg_hba.conf)";

/// A pool's failure to hand out a session (deadpool-postgres's, or one whose manager answers
/// target errors).
impl<E: Into<TargetError> + std::fmt::Display> From<deadpool::managed::PoolError<E>> for TargetError {
    fn from(e: deadpool::managed::PoolError<E>) -> Self {
        match e {
            deadpool::managed::PoolError::Backend(e) => e.into(),
            deadpool::managed::PoolError::Timeout(deadpool::managed::TimeoutType::Create) => {
                TargetError::Stalled(crate::spec::CONNECT_TIMEOUT.as_secs())
            }
            other => TargetError::Connect(redact(&other.to_string())),
        }
    }
}

impl From<pgplane_core::Error> for TargetError {
    fn from(e: pgplane_core::Error) -> Self {
        TargetError::Internal(e.to_string())
    }
}

/// Removes anything that looks like a SCRAM verifier from a server message, in case a server
/// ever echoes part of a statement back (a syntax error "at or near" does).
fn redact(message: &str) -> String {
    match message.find("SCRAM-SHA-256$") {
        Some(at) => format!("{}[redacted]", &message[..at]),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_are_cut_from_messages() {
        assert_eq!(
            redact("syntax error at or near \"SCRAM-SHA-256$4096:abc\""),
            "syntax error at or near \"[redacted]"
        );
        assert_eq!(redact("role \"x\" already exists"), "role \"x\" already exists");
    }
}
