//! What the client prints: API objects as doctl-style aligned text tables (default columns per
//! kind of object, `--format` to pick columns by doctl's field names, `--no-header`) or as JSON
//! (`-o json`), and errors as one line on stderr. Writing to a closed pipe (`| head`) is not
//! an error.

use std::io::{self, Write};

use anyhow::bail;
use clap::{Args, ValueEnum};
use comfy_table::{presets, Table};
use serde_json::Value;

/// Spaces between text columns, as doctl's.
const COLUMN_GAP: u16 = 4;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Text,
    Json,
}

/// The output flags every client command takes (before or after its subcommand); global, so
/// with ids of the client's own, as [`super::config::ConnectionArgs`]'s.
#[derive(Args)]
#[command(next_help_heading = "Client options (databases, auth)")]
pub struct OutputArgs {
    /// Output format.
    #[arg(
        id = "output",
        short = 'o',
        long = "output",
        value_name = "MODE",
        global = true,
        value_enum,
        default_value_t = Mode::Text
    )]
    pub mode: Mode,
    /// Columns to show, by field name (for example `--format Name,Password`).
    #[arg(id = "output_format", long = "format", global = true, value_name = "Col1,Col2")]
    format: Option<String>,
    /// Print no header row.
    #[arg(id = "output_no_header", long = "no-header", global = true)]
    no_header: bool,
}

/// One text column: doctl's field name, its header and where its value is in the object.
#[derive(Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub header: &'static str,
    /// A JSON pointer into the API object.
    pub pointer: &'static str,
}

/// A kind of API object: its JSON envelopes and its columns.
pub struct Kind {
    /// The envelope of one object (`{"user": {...}}`).
    pub one: &'static str,
    /// The envelope of a list (`{"users": [...]}`).
    pub many: &'static str,
    /// What a person calls it ("database user").
    pub noun: &'static str,
    /// Every column `--format` may name, one a line: its field name, its header and a JSON
    /// pointer into the API object, separated by `|` (see [`Kind::columns`]).
    columns: &'static str,
    /// Lists show only this many leading columns by default.
    pub list_columns: usize,
    /// One object shows this many leading columns by default (doctl's; pgplane's own follow,
    /// named with `--format`).
    pub one_columns: usize,
}

impl Kind {
    /// Every column `--format` may name, in order.
    fn columns(&self) -> Vec<Column> {
        let cells = |line: &'static str| {
            let mut cells = line.split('|').map(str::trim);
            let mut next = || cells.next().unwrap_or_default();
            Column { name: next(), header: next(), pointer: next() }
        };
        self.columns.lines().map(str::trim).filter(|l| !l.is_empty()).map(cells).collect()
    }
}

pub const CLUSTER: Kind = Kind {
    one: "database",
    many: "databases",
    noun: "database cluster",
    columns: "
        ID         | ID              | /id
        Name       | Name            | /name
        Engine     | Engine          | /engine
        Version    | Version         | /version
        NumNodes   | Number of Nodes | /num_nodes
        Region     | Region          | /region
        Status     | Status          | /status
        Size       | Size            | /size
        StorageMib | Storage (MiB)   | /storage_size_mib
        URI        | URI             | /connection/uri
        Created    | Created At      | /created_at
    ",
    list_columns: 9,
    one_columns: 11,
};

pub const USER: Kind = Kind {
    one: "user",
    many: "users",
    noun: "database user",
    columns: "
        Name            | Name             | /name
        Role            | Role             | /role
        Password        | Password         | /password
        ConnectionLimit | Connection Limit | /settings/connection_limit
        Parameters      | Parameters       | /settings/parameters
        ValidUntil      | Valid Until      | /settings/valid_until
        Status          | Status           | /status
        LeaseSeconds    | Lease (s)        | /lease/ttl_seconds
        Heir            | Heir             | /lease/reassign_to
        Login           | Login            | /login
        GraceLogin      | Grace Login      | /grace/login
        GraceUntil      | Grace Until      | /grace/until
    ",
    list_columns: 3,
    one_columns: 3,
};

/// A user's access levels (`GET …/users/{name}/access`, a pgplane extension).
pub const ACCESS: Kind = Kind {
    one: "access",
    many: "access",
    noun: "access level",
    columns: "
        Database | Database | /database
        Level    | Level    | /level
    ",
    list_columns: 2,
    one_columns: 2,
};

pub const DB: Kind = Kind {
    one: "db",
    many: "dbs",
    noun: "database",
    columns: "
        Name | Name | /name
    ",
    list_columns: 1,
    one_columns: 1,
};

/// A connection pool: doctl's columns, then pgplane's (whether its pooler runs it as asked).
pub const POOL: Kind = Kind {
    one: "pool",
    many: "pools",
    noun: "connection pool",
    columns: "
        User      | User       | /user
        Name      | Name       | /name
        Size      | Size       | /size
        Database  | Database   | /db
        Mode      | Mode       | /mode
        URI       | URI        | /connection/uri
        Status    | Status     | /status
        LastError | Last Error | /last_error
    ",
    list_columns: 6,
    one_columns: 6,
};

/// A firewall rule (a trusted source): doctl's columns, then pgplane's.
pub const FIREWALL_RULE: Kind = Kind {
    one: "rule",
    many: "rules",
    noun: "firewall rule",
    columns: "
        UUID        | UUID        | /uuid
        ClusterUUID | ClusterUUID | /cluster_uuid
        Type        | Type        | /type
        Value       | Value       | /value
        Description | Description | /description
        Created     | Created At  | /created_at
    ",
    list_columns: 4,
    one_columns: 4,
};

/// A cluster's CA certificate (`GET …/ca`).
pub const CA: Kind = Kind {
    one: "ca",
    many: "ca",
    noun: "CA certificate",
    columns: "
        Certificate | Certificate | /certificate
    ",
    list_columns: 1,
    one_columns: 1,
};

impl OutputArgs {
    /// Fails on a `--format` naming a column `kind` lacks, so that a typo is caught before
    /// anything is changed.
    pub fn check(&self, kind: &Kind) -> anyhow::Result<()> {
        self.columns(kind, usize::MAX).map(drop)
    }

    /// Prints a list answer (an array of objects).
    pub fn print_list(&self, kind: &Kind, items: &Value) -> anyhow::Result<()> {
        let rows = items.as_array().map(Vec::as_slice).unwrap_or_default();
        match self.mode {
            Mode::Json => print_json(items),
            Mode::Text => self.print_table(kind, kind.list_columns, rows),
        }
    }

    /// Prints one object.
    pub fn print_one(&self, kind: &Kind, item: &Value) -> anyhow::Result<()> {
        match self.mode {
            Mode::Json => print_json(item),
            Mode::Text => self.print_table(kind, kind.one_columns, std::slice::from_ref(item)),
        }
    }

    fn print_table(&self, kind: &Kind, defaults: usize, rows: &[Value]) -> anyhow::Result<()> {
        let columns = self.columns(kind, defaults)?;
        let mut table = Table::new();
        table.load_style(presets::NOTHING);
        if !self.no_header {
            table.set_header(columns.iter().map(|c| c.header));
        }
        for row in rows {
            table.add_row(columns.iter().map(|c| cell(row.pointer(c.pointer))));
        }
        for column in table.column_iter_mut() {
            column.set_padding((0, COLUMN_GAP));
        }
        let mut text = table.trim_fmt();
        if !text.is_empty() {
            text.push('\n');
        }
        write_stdout(&text)
    }

    /// The columns `--format` names, or the first `defaults` of the kind's.
    fn columns(&self, kind: &Kind, defaults: usize) -> anyhow::Result<Vec<Column>> {
        let mut all = kind.columns();
        let names: Vec<&str> = match &self.format {
            Some(format) => format.split(',').map(str::trim).filter(|n| !n.is_empty()).collect(),
            None => Vec::new(),
        };
        if names.is_empty() {
            all.truncate(defaults);
            return Ok(all);
        }
        names
            .into_iter()
            .map(|name| {
                all.iter()
                    .find(|c| c.name.eq_ignore_ascii_case(name))
                    .copied()
                    .ok_or_else(|| unknown_column(&all, name))
            })
            .collect()
    }
}

fn unknown_column(columns: &[Column], name: &str) -> anyhow::Error {
    let known: Vec<&str> = columns.iter().map(|c| c.name).collect();
    anyhow::anyhow!("unknown column {name:?} (known: {})", known.join(", "))
}

/// A JSON value as a table cell: strings bare, null empty, a list as its items separated by
/// commas, a user's parameter as `[DATABASE:]NAME=VALUE`, anything else as JSON.
fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items.iter().map(|i| cell(Some(i))).collect::<Vec<_>>().join(", "),
        Some(Value::Object(o)) if o.contains_key("name") && o.contains_key("value") => {
            let place =
                o.get("database").and_then(Value::as_str).map(|d| format!("{d}:")).unwrap_or_default();
            format!("{place}{}={}", cell(o.get("name")), cell(o.get("value")))
        }
        Some(other) => other.to_string(),
    }
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_stdout(&text)
}

/// Writes to stdout; a reader that went away (`| head`) ends the output quietly.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => bail!("writing to stdout: {e}"),
        _ => Ok(()),
    }
}

/// Prints an error on stderr as one line: `Error: ...`, or doctl's `{"errors":[{"detail":
/// ...}]}` with `-o json`.
pub fn print_error(mode: Mode, error: &anyhow::Error) {
    let detail = format!("{error:#}").split_whitespace().collect::<Vec<_>>().join(" ");
    match mode {
        Mode::Text => eprintln!("Error: {detail}"),
        Mode::Json => eprintln!("{}", serde_json::json!({ "errors": [{ "detail": detail }] })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(format: Option<&str>) -> OutputArgs {
        OutputArgs { mode: Mode::Text, format: format.map(str::to_string), no_header: false }
    }

    #[test]
    fn columns_are_picked_by_field_name_in_any_case() {
        let picked = args(Some("password, name")).columns(&USER, USER.list_columns).unwrap();
        let names: Vec<&str> = picked.iter().map(|c| c.name).collect();
        assert_eq!(names, ["Password", "Name"]);
        let error = args(Some("Name,Nope")).check(&USER).unwrap_err();
        assert!(error.to_string().contains("\"Nope\""), "{error}");
    }

    #[test]
    fn every_column_has_a_name_a_header_and_a_pointer() {
        for kind in [CLUSTER, USER, ACCESS, DB, POOL, FIREWALL_RULE, CA] {
            let columns = kind.columns();
            assert!(kind.list_columns <= columns.len() && kind.one_columns <= columns.len(), "{}", kind.noun);
            for c in columns {
                assert!(!c.name.is_empty() && !c.header.is_empty(), "{}: {:?}", kind.noun, c.name);
                assert!(c.pointer.starts_with('/') && !c.name.contains(' '), "{}: {:?}", kind.noun, c.name);
            }
        }
    }

    #[test]
    fn cells_show_strings_bare_and_numbers_as_json() {
        let cluster = json!({"num_nodes": 1, "connection": {"uri": "postgresql://x"}, "tags": null});
        assert_eq!(cell(cluster.pointer("/num_nodes")), "1");
        assert_eq!(cell(cluster.pointer("/connection/uri")), "postgresql://x");
        assert_eq!(cell(cluster.pointer("/tags")), "");
        let settings = json!({"parameters": [
            {"name": "statement_timeout", "value": "30s"},
            {"name": "work_mem", "value": "8MB", "database": "app"},
        ]});
        assert_eq!(cell(settings.pointer("/parameters")), "statement_timeout=30s, app:work_mem=8MB");
        assert_eq!(cell(cluster.pointer("/missing")), "");
    }
}
