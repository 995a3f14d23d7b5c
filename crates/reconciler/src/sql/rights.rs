//! Database rights statements on a shared server: PUBLIC's CONNECT and TEMPORARY revoked, the
//! cluster's users' granted.

use pgplane_target_server::sql::ident;

/// One message: PUBLIC's rights revoked, the missing users' granted.
pub(crate) fn rights_sql(database: &str, public: bool, missing: &[String]) -> String {
    let database = ident(database);
    let mut sql = Vec::new();
    if public {
        sql.push(format!("REVOKE CONNECT, TEMPORARY ON DATABASE {database} FROM PUBLIC"));
    }
    if !missing.is_empty() {
        let users: Vec<String> = missing.iter().map(|u| ident(u)).collect();
        sql.push(format!("GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {}", users.join(", ")));
    }
    sql.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_loses_connect_and_temporary_and_the_clusters_users_get_them() {
        assert_eq!(
            rights_sql("shop", true, &["app".into(), "o\"k".into()]),
            "REVOKE CONNECT, TEMPORARY ON DATABASE \"shop\" FROM PUBLIC; \
             GRANT CONNECT, TEMPORARY ON DATABASE \"shop\" TO \"app\", \"o\"\"k\""
        );
        assert_eq!(
            rights_sql("shop", true, &[]),
            "REVOKE CONNECT, TEMPORARY ON DATABASE \"shop\" FROM PUBLIC"
        );
    }
}
