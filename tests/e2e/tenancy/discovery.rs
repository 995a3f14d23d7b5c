//! Attacks that try to learn another team's names through listings, previews, dry runs and
//! errors, and hostile bytes in paths and queries.
