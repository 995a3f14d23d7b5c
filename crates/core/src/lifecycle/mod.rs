//! Every lifecycle pgplane keeps, in one place, each file with its transition table:
//! - `objects`: a managed user or database (desired state, sync status, generations, claim);
//! - `cluster`: a registered cluster (status creating/online, generation and reconciled
//!   generation, failed attempts and their backoff, the last full pass);
//! - `access`: a user's access levels (access generation, applied generation, error).
//!
//! The effects of each transition are computed here, in pure functions; the store executes
//! them, binding the values as the enums they are (the SQL holds no state names).

mod access;
mod cluster;
mod objects;

pub use access::{AccessOutcome, AccessOutcomeEffect};
pub use cluster::{backoff, ClusterStatus, PassEnd};
pub(crate) use objects::lifecycle_columns;
pub use objects::*;
