//! Quoting for SQL text that cannot take bind parameters (DDL). Every identifier that reaches
//! a statement goes through [`ident`]; every string literal through [`literal`]. Also the
//! session settings that keep statements carrying verifiers out of the server log.

/// Keeps the session's statements out of the server log, whatever the server's logging
/// settings (statements, errors, durations, samples): they carry verifiers. Superusers only.
/// Send it as its own message: the server decides whether to log a simple-query string when
/// it receives it, before any SET in it has run.
pub const QUIET: &str = "SET log_statement = 'none'; SET log_min_error_statement = 'panic'; \
     SET log_min_duration_statement = -1; SET log_min_duration_sample = -1; \
     SET log_transaction_sample_rate = 0";

/// Gives the session back its logging settings after [`QUIET`].
pub const LOUD: &str = "RESET log_statement; RESET log_min_error_statement; \
     RESET log_min_duration_statement; RESET log_min_duration_sample; \
     RESET log_transaction_sample_rate";

/// Quotes an identifier: wraps it in double quotes and doubles any double quote inside, so that
/// any name (spaces, semicolons, quotes, backslashes, unicode) is one identifier and nothing
/// else. Names are validated before they get here (no NUL, at most 63 bytes).
pub fn ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Quotes a string literal with standard_conforming_strings semantics (on by default since
/// PostgreSQL 9.1): doubles single quotes; an E'' literal is used when a backslash is present so
/// that the result is right whatever the server setting.
pub fn literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 3);
    if value.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_quoted_and_inner_quotes_doubled() {
        assert_eq!(ident("app"), "\"app\"");
        assert_eq!(ident("App"), "\"App\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(ident("\""), "\"\"\"\"");
        assert_eq!(ident("x\"; DROP ROLE postgres; --"), "\"x\"\"; DROP ROLE postgres; --\"");
        assert_eq!(ident("back\\slash"), "\"back\\slash\"");
        assert_eq!(ident("名前 🐘"), "\"名前 🐘\"");
        assert_eq!(ident(""), "\"\"");
    }

    #[test]
    fn quoted_identifiers_have_balanced_quotes() {
        for name in ["a", "\"", "\"\"", "a\"\"b\"", "';--", "\\\"", &"\"".repeat(63)] {
            let q = ident(name);
            let inner = &q[1..q.len() - 1];
            // Inside, quotes only ever come in pairs: the identifier cannot be closed early.
            assert_eq!(inner.replace("\"\"", "").matches('"').count(), 0, "{name}");
            assert_eq!(inner.replace("\"\"", "\""), name);
        }
    }

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(literal("abc"), "'abc'");
        assert_eq!(literal("o'brien"), "'o''brien'");
        assert_eq!(literal("a\\b"), "E'a\\\\b'");
        assert_eq!(literal("'; DROP ROLE x; --"), "'''; DROP ROLE x; --'");
        assert_eq!(literal("SCRAM-SHA-256$4096:abc=$def=:ghi="), "'SCRAM-SHA-256$4096:abc=$def=:ghi='");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever the name, the quoted identifier is one token that reads back as the name.
        #[test]
        fn quoted_identifiers_read_back_exactly(name in "[\\PC\"';\\\\ ]{0,40}") {
            let q = ident(&name);
            prop_assert!(q.starts_with('"') && q.ends_with('"'));
            let inner = &q[1..q.len() - 1];
            prop_assert_eq!(inner.replace("\"\"", "").matches('"').count(), 0);
            prop_assert_eq!(inner.replace("\"\"", "\""), name);
        }

        /// Whatever the value, the literal reads back as the value.
        #[test]
        fn quoted_literals_read_back_exactly(value in "[\\PC'\\\\]{0,40}") {
            let q = literal(&value);
            let body = q.trim_start_matches('E');
            let inner = &body[1..body.len() - 1];
            let unescaped = if q.starts_with('E') { inner.replace("\\\\", "\\") } else { inner.to_string() };
            prop_assert_eq!(unescaped.replace("''", "'"), value);
        }
    }
}
