//! This process's name on every PostgreSQL server it connects to: `pgplane/` and a random id,
//! drawn once per process and sent as each session's `application_name`. On a target it tells
//! one process's sessions from another's; on the metadata database it shows which processes
//! are alive (see `Store::dead_processes`).

use std::sync::OnceLock;

/// What every process's name starts with.
pub const PREFIX: &str = "pgplane/";

/// This process's name.
pub fn name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| format!("{PREFIX}{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_drawn_once_and_fits_an_application_name() {
        assert_eq!(name(), name());
        assert!(name().starts_with(PREFIX) && name().len() == PREFIX.len() + 12, "{}", name());
    }
}
