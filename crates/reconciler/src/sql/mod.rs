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

/// SQLSTATE lock_not_available: what a CREATE ROLE gets when another session's transaction,
/// still open, created the same name, and the wait for it outlasted `lock_timeout`.
pub(crate) const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Whether a CREATE ROLE or CREATE DATABASE failed because the name was taken, before it ran
/// (`duplicate`) or while it ran.
pub(crate) fn name_taken(e: &pgplane_target_server::TargetError, duplicate: &str) -> bool {
    matches!(e.sqlstate(), Some(code) if code == duplicate || code == UNIQUE_VIOLATION)
}

/// Whether a CREATE ROLE failed because the name was taken, or is being taken by a transaction
/// still open (a role's name is all its creation waits on; a dead process of pgplane's own that
/// left one open was ended before the pass read the catalogs, `pass::connect`).
pub(crate) fn role_name_taken(e: &pgplane_target_server::TargetError) -> bool {
    name_taken(e, DUPLICATE_OBJECT) || e.sqlstate() == Some(LOCK_NOT_AVAILABLE)
}
