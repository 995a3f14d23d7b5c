//! pgplane-core: what every part of pgplane shares. Domain rules (which names are acceptable,
//! who may inherit a deleted user's objects, which server is a cluster's),
//! secrets (sealing at rest, generated passwords and their SCRAM verifiers, API tokens) and the
//! metadata store (the gateway's own PostgreSQL database, reached only through sqlx).

pub mod access;
pub mod credentials;
pub mod error;
pub mod heartbeat;
pub mod heirs;
pub mod instance;
pub mod lifecycle;
pub mod model;
pub mod names;
pub mod notifications;
pub mod parameters;
pub mod passwords;
pub mod powers;
pub mod scopes;
pub mod secrets;
pub mod store;
pub mod tokens;

pub use error::{Error, Result};
pub use store::Store;
