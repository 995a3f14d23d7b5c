//! The measured scenarios: users, databases, reads (with memory under load), scale (the
//! periodic drift pass over many clusters), floods (valid requests during floods of wrong
//! secrets), replicas (three processes against one, SIGKILL takeover), fleet (a thousand
//! clusters on one process), credentials (a rotation under a login load, leases reaped), pools
//! (pgbench through a managed PgBouncer and one configured by hand, time to a pool's first login).

pub mod credentials;
pub mod databases;
pub mod fleet;
pub mod floods;
pub mod pools;
pub mod reads;
pub mod replicas;
pub mod scale;
pub mod users;
