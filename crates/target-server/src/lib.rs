//! pgplane-target-server: what the API and the reconciler both need to reach a target PostgreSQL
//! server: its connection (address policy, session budget, the watched socket, TLS, session
//! limits, deadlines), SQL quoting,
//! the errors a target answers, and the read-only exchanges registration makes.

pub mod budget;
pub mod dependencies;
mod error;
pub mod hba;
pub mod plan;
pub mod policy;
pub mod primary;
mod probe;
mod spec;
pub mod sql;
mod tls;
mod wire;

pub use budget::SessionBudget;
pub use error::TargetError;
pub use policy::TargetPolicy;
pub use probe::{list_roles_and_databases, probe, survey, ServerFacts, ServerObject, Survey, SERVER_ID_SQL};
pub use spec::{
    within, SessionLimits, TargetSpec, CONNECT_TIMEOUT, EXCHANGE_TIMEOUT, MIN_SERVER_VERSION_NUM,
    ONE_OFF_WAIT, SESSION_WAIT,
};
pub use tls::SUPPORTED_SSLMODES;
