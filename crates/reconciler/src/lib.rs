//! pgplane-reconciler: makes each target PostgreSQL server match the desired state held in the
//! metadata store. Level-triggered and idempotent: every pass observes the target's catalogs,
//! plans the difference, applies it and records each object's outcome. Woken by API writes
//! (LISTEN/NOTIFY) and run periodically to find drift. [`Previewer`] plans a pass without
//! applying it, for the API (handed to the gateway by the process that runs both).
//!
//! The folders follow the calls downward: `controller` (the loop, the cluster lock, slots,
//! drift scheduling) runs a `pass` (load, observe, plan, execute the plan, record), which reads
//! the target through `observe`, decides through `plan` (pure) and sends the text `sql`
//! builds (pure); `pools` holds the sessions to targets.

mod controller;
pub mod metrics;
mod observe;
mod pass;
mod plan;
mod pools;
mod sql;

pub use controller::{Reconciler, ReconcilerConfig, Stats};
pub use pass::preview::Previewer;
