//! The SQL text a pass sends to a target, built by pure functions (no I/O): roles, databases,
//! access levels and database rights on shared servers, one file each. Every statement quotes
//! its identifiers (`pgplane_target_server::sql::ident`) and literals (`literal`). The queries a
//! pass reads the target's catalogs with are in `observe`.

pub(crate) mod access;
pub(crate) mod databases;
pub(crate) mod rights;
pub(crate) mod roles;

/// SQLSTATE duplicate_object (CREATE ROLE of an existing role).
pub(crate) const DUPLICATE_OBJECT: &str = "42710";
/// SQLSTATE duplicate_database.
pub(crate) const DUPLICATE_DATABASE: &str = "42P04";
