//! Server-wide powers a tenant's user may hold. REPLICATION is the one a user can ask for
//! (`settings.pg_allow_replication`), and it reaches the whole server: a replication
//! connection streams every database (a base backup copies every team's data and every
//! role's password verifier) and a replication slot can hold WAL until the disk fills. It is
//! given only where the operator allows it (`--allow-replication-for-sole-tenants`) and only
//! to a cluster alone on its server; the gateway refuses the request otherwise, and each pass
//! withholds it (removing it, and saying so on the user) once the server hosts another cluster.

/// Why a user of a cluster may not hold REPLICATION, if it may not: `operator_allows` is the
/// operator's setting, `alone_on_server` whether no other cluster is registered on the
/// cluster's server (as far as the metadata knows its identity).
pub fn replication_refusal(operator_allows: bool, alone_on_server: bool) -> Option<&'static str> {
    if !operator_allows {
        Some(
            "pg_allow_replication is not allowed: REPLICATION reads the whole server (a base backup \
             copies every database and every role's password verifier, other teams' included); \
             this pgplane's operator has not allowed it (--allow-replication-for-sole-tenants)",
        )
    } else if !alone_on_server {
        Some(
            "pg_allow_replication is not allowed on this cluster: REPLICATION reads the whole \
             server, and this cluster's server hosts other clusters",
        )
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_needs_the_operator_and_a_server_of_its_own() {
        assert!(replication_refusal(false, true).unwrap().contains("--allow-replication-for-sole-tenants"));
        assert!(replication_refusal(false, false).is_some());
        assert!(replication_refusal(true, false).unwrap().contains("other clusters"));
        assert_eq!(replication_refusal(true, true), None);
    }
}
