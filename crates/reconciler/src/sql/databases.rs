//! Database statements: CREATE DATABASE, ALTER DATABASE … OWNER TO and DROP DATABASE.

use pgplane_target_server::sql::ident;

use crate::plan::Step;

/// The statement that carries out a database's step, if the step issues DDL here. CREATE and
/// DROP DATABASE cannot run inside a transaction: each is sent alone. A database is copied from
/// `template0`, which nobody can connect to, so a session any login holds on `template1` cannot
/// make another team's CREATE DATABASE fail (encoding and locale are template0's: the server's
/// defaults from initdb). DROP DATABASE ends the sessions connected to it (WITH (FORCE),
/// PostgreSQL 13+).
pub(crate) fn database_sql(name: &str, step: &Step) -> Option<String> {
    match step {
        Step::CreateDatabase { owner } => {
            Some(format!("CREATE DATABASE {} OWNER {} TEMPLATE template0", ident(name), ident(owner)))
        }
        Step::AlterDatabaseOwner { owner } => {
            Some(format!("ALTER DATABASE {} OWNER TO {}", ident(name), ident(owner)))
        }
        Step::DropDatabase => Some(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(name))),
        _ => None,
    }
}
