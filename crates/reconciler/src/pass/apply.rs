//! Running planned statements on a target (their text is built in `crate::sql`). The role steps of a pass are pipelined on
//! one session: each is one simple-query message (one implicit transaction), sent without
//! waiting for the answer to the one before, so the target works through them back to back.
//! While statements carrying password verifiers run, the session keeps statement logging off
//! (superuser admins only; others cannot, and only ever send verifiers anyway).
//! CREATE/DROP DATABASE run one at a time, outside transactions, as PostgreSQL requires.

use futures::future::join_all;
use futures::{TryFutureExt, TryStreamExt};
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::plan::AdminMembership;
use crate::sql::roles::{
    admin_member_sql, drop_role_sql, drop_roles_if_clean_sql, drop_roles_sql, hand_over_sql, nologin_sql,
    terminate_stopped_sql, ROLES_LEFT_SQL,
};
use pgplane_target_server::sql::{LOUD, QUIET};
use pgplane_target_server::TargetError;
use pgplane_target_server::{SessionLimits, TargetSpec};

/// SQLSTATE invalid_catalog_name (connecting to a database that is gone).
const INVALID_CATALOG_NAME: &str = "3D000";

/// Runs statements independent of each other (each a whole message, see
/// `sql::roles::role_sql`), spread over `sessions` and pipelined on each, with logging off
/// while they run when `quiet`; one result per statement, in order. Each role step costs the
/// server a few milliseconds of CPU (it checks the verifier against an empty password), so
/// sessions in parallel use more of its cores; database drops (not quiet) share their
/// checkpoints. Also returns, per session, whether its logging settings were restored: a
/// session for which they were not must be closed rather than reused.
pub(crate) async fn run_spread(
    sessions: &[&Client],
    statements: &[String],
    quiet: bool,
) -> (Vec<Result<(), TargetError>>, Vec<bool>) {
    let used = sessions.len().min(statements.len());
    let shares = join_all(sessions[..used].iter().enumerate().map(|(k, client)| {
        let share: Vec<&String> = statements.iter().skip(k).step_by(used).collect();
        run_on_session(client, share, quiet)
    }))
    .await;
    let mut clean: Vec<bool> = sessions.iter().map(|_| true).collect();
    let mut results: Vec<Option<Result<(), TargetError>>> = statements.iter().map(|_| None).collect();
    for (k, (share, restored)) in shares.into_iter().enumerate() {
        clean[k] = restored;
        for (j, result) in share.into_iter().enumerate() {
            results[k + j * used] = Some(result);
        }
    }
    (results.into_iter().map(|r| r.expect("every statement ran on one session")).collect(), clean)
}

/// One session's share of `run_spread`.
async fn run_on_session(
    client: &Client,
    statements: Vec<&String>,
    quiet: bool,
) -> (Vec<Result<(), TargetError>>, bool) {
    if !quiet {
        return (pipelined(client, statements).await, true);
    }
    // The statements must wait for the SETs' answer (had they failed, the statements would be
    // logged), but the RESETs can follow them in the same pipeline.
    if let Err(e) = client.batch_execute(QUIET).await {
        let e = TargetError::from(e);
        return (statements.iter().map(|_| Err(e.clone())).collect(), false);
    }
    let (results, restored) = futures::join!(pipelined(client, statements), client.batch_execute(LOUD));
    (results, restored.is_ok())
}

/// Sends every statement without waiting for the answers in between; one result each.
async fn pipelined<S: AsRef<str>>(
    client: &Client,
    statements: impl IntoIterator<Item = S>,
) -> Vec<Result<(), TargetError>> {
    join_all(statements.into_iter().map(|s| async move { client.batch_execute(s.as_ref()).await }))
        .await
        .into_iter()
        .map(|r| r.map_err(TargetError::from))
        .collect()
}

/// Drops roles that may own objects and have open sessions: stop new logins and end their
/// sessions; when nothing depends on them, DROP ROLE at once (in the same pipeline, the usual
/// case); otherwise ask `pg_shdepend` in which databases one of them owns something or holds a
/// privilege, then, in each of those databases, hand what they own to `reassign_to` and drop
/// their privileges (REASSIGN/DROP OWNED act on the current database only), then DROP ROLE.
/// A database nothing depends on is not visited: opening a session costs a backend start and a
/// SCRAM login. Should something come to depend on a role meanwhile, its DROP ROLE fails and
/// the next pass looks again. Returns one result per role: a role whose step failed goes no
/// further, the others carry on.
///
/// The target commits once for all the roles' NOLOGINs and once for their DROP ROLE, as long
/// as none fails; when one does, each role's statement is sent on its own to tell which.
pub(crate) async fn drop_roles(
    client: &Client,
    spec: &TargetSpec,
    limits: SessionLimits,
    names: &[&str],
    reassign_to: &str,
    acting: Option<AdminMembership>,
) -> Vec<Result<(), TargetError>> {
    // An admin that is not a superuser takes the privileges of the roles it hands over, and of
    // their heir (REASSIGN OWNED needs both).
    let nologin: Vec<String> = names
        .iter()
        .map(|n| match acting {
            Some(m) => format!("{}; {}", nologin_sql(n), admin_member_sql(n, m)),
            None => nologin_sql(n),
        })
        .collect();
    if let Some(m) = acting {
        if let Err(e) = client.batch_execute(&admin_member_sql(reassign_to, m)).await {
            let e = TargetError::from(e);
            return names.iter().map(|_| Err(e.clone())).collect();
        }
    }
    let (mut results, stopped) = stop_logins(client, &nologin, names, spec.admin_database()).await;
    let dependents = match stopped {
        Ok(Stopped::Dropped) => return names.iter().map(|_| Ok(())).collect(),
        Ok(Stopped::Depended(d)) => d,
        Err(e) => {
            fail_remaining(&mut results, &e);
            return results;
        }
    };
    for (database, owners) in dependents {
        let live = |role: &&String| names.iter().position(|n| n == *role).is_some_and(|i| results[i].is_ok());
        let owners: Vec<&String> = owners.iter().filter(live).collect();
        if owners.is_empty() {
            continue;
        }
        let cleanup: Vec<String> = owners.iter().map(|role| hand_over_sql(role, reassign_to)).collect();
        let outcome = if database == spec.admin_database() {
            pipelined(client, &cleanup).await
        } else {
            match spec.connect(&database, limits).await {
                Ok(db_client) => pipelined(&db_client, &cleanup).await,
                Err(e) if database_gone(client, &database, &e).await => continue,
                Err(e) => {
                    fail_remaining(&mut results, &e);
                    return results;
                }
            }
        };
        for (role, result) in owners.iter().zip(outcome) {
            let Err(e) = result else { continue };
            if database_gone(client, &database, &e).await {
                break;
            }
            if let Some(result) = names.iter().position(|n| n == *role).map(|i| &mut results[i]) {
                if result.is_ok() {
                    *result = Err(e);
                }
            }
        }
    }
    let remaining: Vec<usize> = (0..names.len()).filter(|i| results[*i].is_ok()).collect();
    let dropping: Vec<&str> = remaining.iter().map(|i| names[*i]).collect();
    if dropping.is_empty() || client.batch_execute(&drop_roles_sql(&dropping)).await.is_ok() {
        return results;
    }
    let statements: Vec<String> = dropping.iter().map(|name| drop_role_sql(name)).collect();
    for (i, result) in remaining.into_iter().zip(pipelined(client, &statements).await) {
        results[i] = result;
    }
    results
}

/// Where stopping the roles' logins left them.
enum Stopped {
    /// Nothing depended on them: they are dropped already.
    Dropped,
    /// The databases where they own something or hold a privilege (see
    /// [`dependent_databases`]), with those roles.
    Depended(Vec<(String, Vec<String>)>),
}

/// What comes before a deletion hands anything over: every role's NOLOGIN (`nologin`, one
/// message each), then their sessions ended and, when nothing depends on them, their DROP
/// ROLE (`drop_roles_if_clean_sql`); otherwise the databases where they own something
/// (`dependent_databases`): all in one pipeline. The NOLOGINs go in one message (one commit);
/// should that fail, each is sent on its own, to tell which role failed, and the rest follows
/// again. The sessions ended are only those of roles whose NOLOGIN took. Returns one result
/// per role and what the rest found.
async fn stop_logins(
    client: &Client,
    nologin: &[String],
    names: &[&str],
    admin_database: &str,
) -> (Vec<Result<(), TargetError>>, Result<Stopped, TargetError>) {
    let terminate = terminate_stopped_sql(names);
    let drop = drop_roles_if_clean_sql(names);
    let dropped = || async {
        let (dropped, left) = futures::join!(
            client.batch_execute(&drop),
            client.query_typed_raw(ROLES_LEFT_SQL, [(names, Type::NAME_ARRAY)]).and_then(|rows| async move {
                let rows: Vec<_> = rows.try_collect().await?;
                Ok(rows.first().map_or(0, |row| row.get::<_, i64>(0)))
            }),
        );
        Ok::<_, tokio_postgres::Error>(dropped.is_ok() && left? == 0)
    };
    let stopped = |ended: Result<(), tokio_postgres::Error>, dropped, found| match (ended, dropped, found) {
        (Ok(()), Ok(true), _) => Ok(Stopped::Dropped),
        (Ok(()), Ok(false), Ok(found)) => Ok(Stopped::Depended(found)),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(TargetError::from(e)),
    };
    let together = nologin.join("; ");
    let (all, ended, dropped_all, found) = futures::join!(
        client.batch_execute(&together),
        client.batch_execute(&terminate),
        dropped(),
        dependent_databases(client, names, admin_database),
    );
    let stopped_all = stopped(ended, dropped_all, found);
    if all.is_ok() || matches!(stopped_all, Ok(Stopped::Dropped)) {
        return (names.iter().map(|_| Ok(())).collect(), stopped_all);
    }
    let (results, ended, found) = futures::join!(
        pipelined(client, nologin),
        client.batch_execute(&terminate),
        dependent_databases(client, names, admin_database),
    );
    (results, stopped(ended, Ok(false), found))
}

/// The databases where `pg_shdepend` shows that one of `roles` owns something or holds a
/// privilege (shared objects count for `admin_database`), with those roles, by database. One
/// round trip: the statement's types are given, so it is not prepared first.
pub(crate) async fn dependent_databases(
    client: &Client,
    roles: &[&str],
    admin_database: &str,
) -> Result<Vec<(String, Vec<String>)>, tokio_postgres::Error> {
    let rows = client
        .query_typed(
            "SELECT coalesce(d.datname, $2)::text, array_agg(DISTINCT r.rolname::text)
               FROM pg_catalog.pg_shdepend s
               JOIN pg_catalog.pg_roles r ON r.oid = s.refobjid
               LEFT JOIN pg_catalog.pg_database d ON d.oid = s.dbid
              WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
                AND r.rolname = ANY($1) AND d.datallowconn IS NOT FALSE
              GROUP BY 1 ORDER BY 1",
            &[(&roles, Type::NAME_ARRAY), (&admin_database, Type::NAME)],
        )
        .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
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

/// Runs one database step's statement.
pub(crate) async fn run_database_step(client: &Client, sql: &str) -> Result<(), TargetError> {
    client.batch_execute(sql).await?;
    Ok(())
}
