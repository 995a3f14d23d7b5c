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
/// SQLSTATE unique_violation: what a CREATE ROLE or CREATE DATABASE gets when another
/// session created the same name while it ran (the catalog's unique index, not the check that
/// gives [`DUPLICATE_OBJECT`] or [`DUPLICATE_DATABASE`]).
pub(crate) const UNIQUE_VIOLATION: &str = "23505";

/// Whether a CREATE ROLE or CREATE DATABASE failed because the name was taken, before it ran
/// (`duplicate`) or while it ran.
pub(crate) fn name_taken(e: &pgplane_target_server::TargetError, duplicate: &str) -> bool {
    matches!(e.sqlstate(), Some(code) if code == duplicate || code == UNIQUE_VIOLATION)
}
