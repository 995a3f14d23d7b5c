//! Carrying out planned steps on a target. Every statement quotes its identifiers
//! (`sql::ident`) and literals (`sql::literal`). Statements that carry a password verifier run
//! in a transaction that first turns statement logging off (superuser admins only; others
//! cannot, and only ever send verifiers anyway). CREATE/DROP DATABASE run outside
//! transactions, as PostgreSQL requires.

use tokio_postgres::Client;

use crate::error::TargetError;
use crate::observe::RoleAttrs;
use crate::sql::{ident, literal};
use crate::target::{SessionLimits, TargetSpec};

/// SQLSTATE duplicate_object (CREATE ROLE of an existing role).
pub(crate) const DUPLICATE_OBJECT: &str = "42710";
/// SQLSTATE duplicate_database.
pub(crate) const DUPLICATE_DATABASE: &str = "42P04";
/// SQLSTATE invalid_catalog_name (connecting to a database that is gone).
const INVALID_CATALOG_NAME: &str = "3D000";

/// Keeps the statement that follows out of the server log: it carries a verifier.
const SUPPRESS_LOGGING: &str = "SET LOCAL log_statement = 'none'; \
     SET LOCAL log_min_error_statement = 'panic'; \
     SET LOCAL log_min_duration_statement = -1";

fn attrs_sql(a: RoleAttrs) -> String {
    let flag = |on: bool, name: &str| {
        if on {
            format!(" {name}")
        } else {
            format!(" NO{name}")
        }
    };
    [
        flag(a.login, "LOGIN"),
        flag(a.superuser, "SUPERUSER"),
        flag(a.createdb, "CREATEDB"),
        flag(a.createrole, "CREATEROLE"),
        flag(a.replication, "REPLICATION"),
        flag(a.bypassrls, "BYPASSRLS"),
        " INHERIT".to_string(),
    ]
    .concat()
}

/// Runs `statement` (which may carry a verifier), then `and_then` if given, in one transaction
/// with logging suppressed when the admin is allowed to suppress it. Two round trips instead
/// of four or five (a role step costs the server about a millisecond, so round trips were a
/// large part of it): `BEGIN` and the `SET LOCAL`s first, then the statements and `COMMIT`
/// in one message. They must not share the first message: the server decides whether to log
/// a whole simple-query string when it receives it, before any `SET LOCAL` in it has run.
/// When a statement fails the server skips the rest, and the transaction is rolled back here.
async fn run_secret_statement(
    client: &Client,
    statement: &str,
    and_then: Option<&str>,
    can_suppress_logging: bool,
) -> Result<(), TargetError> {
    let begin = if can_suppress_logging { format!("BEGIN; {SUPPRESS_LOGGING}") } else { "BEGIN".into() };
    let mut rest = String::from(statement);
    if let Some(next) = and_then {
        rest.push_str("; ");
        rest.push_str(next);
    }
    rest.push_str("; COMMIT");
    let result = match client.batch_execute(&begin).await {
        Ok(()) => client.batch_execute(&rest).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        // Leave the session usable: the failed transaction is still open.
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(e.into());
    }
    Ok(())
}

/// CREATE ROLE with the given attributes and password verifier, and in the same transaction
/// the ADMIN OPTION grant to `grant_admin_to` when given.
pub(crate) async fn create_role(
    client: &Client,
    name: &str,
    attrs: RoleAttrs,
    verifier: &str,
    grant_admin_to: Option<&str>,
    can_suppress_logging: bool,
) -> Result<(), TargetError> {
    let statement =
        format!("CREATE ROLE {} WITH{} PASSWORD {}", ident(name), attrs_sql(attrs), literal(verifier));
    let grant = grant_admin_to.map(|g| grant_admin_option_sql(name, g));
    run_secret_statement(client, &statement, grant.as_deref(), can_suppress_logging).await
}

/// ALTER ROLE to the given attributes, and the password verifier when given, and the ADMIN
/// OPTION grant to `grant_admin_to` when given.
pub(crate) async fn alter_role(
    client: &Client,
    name: &str,
    attrs: RoleAttrs,
    verifier: Option<&str>,
    grant_admin_to: Option<&str>,
    can_suppress_logging: bool,
) -> Result<(), TargetError> {
    let mut statement = format!("ALTER ROLE {} WITH{}", ident(name), attrs_sql(attrs));
    let grant = grant_admin_to.map(|g| grant_admin_option_sql(name, g));
    match verifier {
        Some(v) => {
            statement.push_str(" PASSWORD ");
            statement.push_str(&literal(v));
            run_secret_statement(client, &statement, grant.as_deref(), can_suppress_logging).await
        }
        None => {
            client.batch_execute(&statement).await?;
            if let Some(grant) = grant {
                client.batch_execute(&grant).await?;
            }
            Ok(())
        }
    }
}

/// Grants the primary user ADMIN OPTION on a role (PostgreSQL 16+), without membership
/// privileges: it may manage the role, not act as it.
fn grant_admin_option_sql(role: &str, grantee: &str) -> String {
    format!("GRANT {} TO {} WITH ADMIN TRUE, INHERIT FALSE, SET FALSE", ident(role), ident(grantee))
}

/// Drops roles that may own objects and have open sessions: stop new logins, end their
/// sessions, hand what they own in every database to `reassign_to` and drop their privileges
/// there (REASSIGN/DROP OWNED act on the current database only), then DROP ROLE. All the roles
/// of a pass share one session per database (opening one costs a backend start and a SCRAM
/// login, several ms, which per role and database made deletions ten times slower than their
/// statements). Returns one result per role: a role whose step failed goes no further, the
/// others carry on.
pub(crate) async fn drop_roles(
    client: &Client,
    spec: &TargetSpec,
    limits: SessionLimits,
    names: &[&str],
    reassign_to: &str,
) -> Vec<Result<(), TargetError>> {
    let mut results: Vec<Result<(), TargetError>> = names.iter().map(|_| Ok(())).collect();
    for (name, result) in names.iter().zip(results.iter_mut()) {
        if let Err(e) = client.batch_execute(&format!("ALTER ROLE {} NOLOGIN", ident(name))).await {
            *result = Err(e.into());
        }
    }
    let live: Vec<&str> =
        names.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(name, _)| *name).collect();
    if live.is_empty() {
        return results;
    }
    let databases = async {
        client
            .execute(
                "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity
                  WHERE usename = ANY($1) AND pid <> pg_catalog.pg_backend_pid()",
                &[&live],
            )
            .await?;
        let rows = client
            .query("SELECT datname FROM pg_catalog.pg_database WHERE datallowconn ORDER BY datname", &[])
            .await?;
        Ok::<Vec<String>, tokio_postgres::Error>(rows.into_iter().map(|row| row.get(0)).collect())
    };
    let databases = match databases.await {
        Ok(d) => d,
        Err(e) => {
            fail_remaining(&mut results, &e.into());
            return results;
        }
    };
    for database in databases {
        let db_client = match spec.connect(&database, limits).await {
            Ok(c) => c,
            Err(e) if database_gone(client, &database, &e).await => continue,
            Err(e) => {
                fail_remaining(&mut results, &e);
                return results;
            }
        };
        for (name, result) in names.iter().zip(results.iter_mut()).filter(|(_, r)| r.is_ok()) {
            let cleanup = format!(
                "REASSIGN OWNED BY {role} TO {to}; DROP OWNED BY {role}",
                role = ident(name),
                to = ident(reassign_to)
            );
            if let Err(e) = db_client.batch_execute(&cleanup).await {
                let e = TargetError::from(e);
                if database_gone(client, &database, &e).await {
                    break;
                }
                *result = Err(e);
            }
        }
    }
    for (name, result) in names.iter().zip(results.iter_mut()).filter(|(_, r)| r.is_ok()) {
        if let Err(e) = client.batch_execute(&format!("DROP ROLE IF EXISTS {}", ident(name))).await {
            *result = Err(e.into());
        }
    }
    results
}

/// Whether a failure on `database` came from its being dropped (or being dropped, its sessions
/// ended) since it was listed: it took the roles' objects with it, nothing is left to clean.
async fn database_gone(client: &Client, database: &str, error: &TargetError) -> bool {
    error.sqlstate() == Some(INVALID_CATALOG_NAME)
        || matches!(
            client.query_opt("SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1", &[&database]).await,
            Ok(None)
        )
}

/// Marks every role still on its way as failed with `error`.
fn fail_remaining(results: &mut [Result<(), TargetError>], error: &TargetError) {
    for result in results.iter_mut().filter(|r| r.is_ok()) {
        *result = Err(error.clone());
    }
}

/// CREATE DATABASE owned by `owner` (cannot run inside a transaction).
pub(crate) async fn create_database(client: &Client, name: &str, owner: &str) -> Result<(), TargetError> {
    client.batch_execute(&format!("CREATE DATABASE {} OWNER {}", ident(name), ident(owner))).await?;
    Ok(())
}

/// Gives a database back to its rightful owner.
pub(crate) async fn alter_database_owner(
    client: &Client,
    name: &str,
    owner: &str,
) -> Result<(), TargetError> {
    client.batch_execute(&format!("ALTER DATABASE {} OWNER TO {}", ident(name), ident(owner))).await?;
    Ok(())
}

/// DROP DATABASE, ending the sessions connected to it (WITH (FORCE), PostgreSQL 13+).
pub(crate) async fn drop_database(client: &Client, name: &str) -> Result<(), TargetError> {
    client.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(name))).await?;
    Ok(())
}
