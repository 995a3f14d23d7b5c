//! pgplane-reconciler: makes each target PostgreSQL server match the desired state held in the
//! metadata store. Level-triggered and idempotent: every pass observes the target's catalogs,
//! plans the difference, applies it and records each object's outcome. Woken by API writes
//! (LISTEN/NOTIFY) and run periodically to find drift.

mod access;
mod apply;
mod controller;
mod error;
pub mod metrics;
mod observe;
mod pass;
mod plan;
pub mod policy;
mod slots;
pub mod sql;
pub mod target;
pub mod tls;

pub use controller::{Reconciler, ReconcilerConfig, Stats};
pub use error::TargetError;
pub use policy::TargetPolicy;
pub use target::{list_roles_and_databases, probe, ServerFacts, TargetSpec};
