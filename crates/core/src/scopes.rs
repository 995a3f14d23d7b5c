//! API token scopes, DigitalOcean's names for what a token may do. A token carries a list of
//! scopes; `*` is full access.

/// Full access: every scope.
pub const FULL_ACCESS: &str = "*";

/// One permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// List and show clusters, users and databases (passwords hidden without ViewCredentials).
    Read,
    /// Register clusters, add users and databases.
    Create,
    /// Change user settings, reset passwords.
    Update,
    /// Unregister clusters, delete users and databases.
    Delete,
    /// See passwords and connection strings with passwords.
    ViewCredentials,
}

impl Scope {
    pub const ALL: [Scope; 5] =
        [Scope::Read, Scope::Create, Scope::Update, Scope::Delete, Scope::ViewCredentials];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "database:read",
            Scope::Create => "database:create",
            Scope::Update => "database:update",
            Scope::Delete => "database:delete",
            Scope::ViewCredentials => "database:view_credentials",
        }
    }

    /// Parses a scope name; `*` is not a scope but full access (see [`check_scopes`]).
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Whether a token with `granted` scopes may act under `scope`.
pub fn grants(granted: &[String], scope: Scope) -> bool {
    granted.iter().any(|g| g == FULL_ACCESS || g == scope.as_str())
}

/// Checks a list of scope names for a new token: each must be `*` or a known scope.
pub fn check_scopes(names: &[String]) -> Result<(), String> {
    match names.iter().find(|n| n.as_str() != FULL_ACCESS && Scope::parse(n).is_none()) {
        Some(unknown) => Err(format!(
            "unknown scope {unknown:?}; use * or one of: {}",
            Scope::ALL.map(Scope::as_str).join(", ")
        )),
        None if names.is_empty() => Err("a token needs at least one scope".into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_access_grants_everything_and_scopes_only_themselves() {
        let full = vec!["*".to_string()];
        let read = vec!["database:read".to_string()];
        for scope in Scope::ALL {
            assert!(grants(&full, scope));
            assert_eq!(grants(&read, scope), scope == Scope::Read);
        }
        assert!(!grants(&[], Scope::Read));
    }

    #[test]
    fn scope_lists_are_checked() {
        assert!(check_scopes(&["*".into()]).is_ok());
        assert!(check_scopes(&["database:read".into(), "database:view_credentials".into()]).is_ok());
        assert!(check_scopes(&["database:write".into()]).is_err());
        assert!(check_scopes(&[]).is_err());
    }
}
