//! Access presets: the named levels a user can be given per database of its cluster, what each
//! level means in PostgreSQL privileges, and the names of the group roles that hold a level's
//! privileges on a database (one per cluster, database and level; users are made members of it).

use rand::Rng;

/// The prefix of every access group role; user names may not start with it.
pub const GROUP_PREFIX: &str = "pgplane_access_";

/// Whether `role` is named like one of pgplane's access group roles (a cluster's, never anyone's
/// to see as unmanaged).
pub fn is_group(role: &str) -> bool {
    role.starts_with(GROUP_PREFIX)
}

/// A named access level on one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccessLevel {
    /// CONNECT; USAGE on every non-system schema; SELECT on its tables (views, materialized
    /// and foreign tables included) and sequences.
    ReadOnly,
    /// `ReadOnly` plus INSERT, UPDATE, DELETE, TRUNCATE on tables and USAGE, UPDATE on
    /// sequences. No CREATE anywhere: schema changes stay with the primary user.
    ReadWrite,
}

/// Privileges on a kind of object, as GRANT spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privileges {
    pub tables: &'static [&'static str],
    pub sequences: &'static [&'static str],
    pub schemas: &'static [&'static str],
}

impl AccessLevel {
    /// Every level, weakest first.
    pub const ALL: [AccessLevel; 2] = [AccessLevel::ReadOnly, AccessLevel::ReadWrite];

    /// The level's API name.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLevel::ReadOnly => "read_only",
            AccessLevel::ReadWrite => "read_write",
        }
    }

    /// The level of an API name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// What the level grants on each non-system schema of its database and the objects in it.
    pub fn privileges(self) -> Privileges {
        match self {
            AccessLevel::ReadOnly => {
                Privileges { tables: &["SELECT"], sequences: &["SELECT"], schemas: &["USAGE"] }
            }
            AccessLevel::ReadWrite => Privileges {
                tables: &["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"],
                sequences: &["SELECT", "USAGE", "UPDATE"],
                schemas: &["USAGE"],
            },
        }
    }

    fn short(self) -> &'static str {
        match self {
            AccessLevel::ReadOnly => "ro",
            AccessLevel::ReadWrite => "rw",
        }
    }
}

/// Refuses `levels` (database, level) naming a database that is not among the cluster's
/// present ones, `present`: the route checks them against the databases as it read them, the
/// store again against those it holds.
pub fn check_levels(levels: &[(String, AccessLevel)], present: &[String]) -> Result<(), String> {
    match levels.iter().find(|(d, _)| !present.contains(d)) {
        Some((unknown, _)) => Err(format!("unknown database {unknown:?}: the cluster has no such database")),
        None => Ok(()),
    }
}

/// A fresh name for the group role that will hold `level` on one database of one cluster:
/// `pgplane_access_<ro|rw>_<80 random bits in hex>` (38 bytes). The name is drawn once, recorded
/// in the metadata before the role is created, and read from there ever after: nothing about
/// the cluster or the database goes into it, so another tenant of the server can neither
/// predict it nor learn from it whose group it is.
pub fn new_group_role(level: AccessLevel) -> String {
    let bytes: [u8; 10] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{GROUP_PREFIX}{}_{hex}", level.short())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_read_back_from_their_names() {
        for level in AccessLevel::ALL {
            assert_eq!(AccessLevel::parse(level.as_str()), Some(level));
        }
        assert_eq!(AccessLevel::parse("owner"), None);
        assert_eq!(AccessLevel::parse("READ_ONLY"), None);
    }

    #[test]
    fn read_only_grants_no_write_and_no_level_grants_create() {
        let ro = AccessLevel::ReadOnly.privileges();
        assert_eq!(ro.tables, ["SELECT"]);
        assert_eq!(ro.sequences, ["SELECT"]);
        for level in AccessLevel::ALL {
            let p = level.privileges();
            assert_eq!(p.schemas, ["USAGE"], "{level:?} never gets CREATE on schemas");
            for privilege in p.tables.iter().chain(p.sequences) {
                assert!(!["CREATE", "REFERENCES", "TRIGGER", "ALL"].contains(privilege));
            }
        }
    }

    #[test]
    fn group_names_are_unpredictable_distinct_and_fit_an_identifier() {
        // Two clusters asking for the same database name and level get unrelated names: the
        // name is drawn at random, with no cluster id, database name or anything derived from
        // them in it.
        let names: Vec<String> = (0..200).map(|i| new_group_role(AccessLevel::ALL[i % 2])).collect();
        for (i, n) in names.iter().enumerate() {
            assert!(n.starts_with(GROUP_PREFIX) && n.len() == 38, "{n}");
            assert!(n.starts_with(&format!("{GROUP_PREFIX}{}_", AccessLevel::ALL[i % 2].short())), "{n}");
            assert!(names[i + 1..].iter().all(|m| m != n), "{n} repeats");
        }
    }
}
