//! Seeing before doing, in the client: a user's dependency preview (`databases user
//! dependencies`, and before `databases user delete` asks), the plan of the next pass
//! (`databases plan`) and a registration dry run (`databases create --dry-run`), printed as
//! readable text (or the API's JSON with `-o json`).

use std::fmt::Write as _;

use reqwest::Method;
use serde_json::Value;

use super::api::Api;
use super::output::{write_stdout, Mode, OutputArgs};
use super::prompt;

/// Prints `value` as JSON or as `text` renders it, by the output mode.
fn print(out: &OutputArgs, value: &Value, text: impl FnOnce(&Value) -> String) -> anyhow::Result<()> {
    match out.mode {
        Mode::Json => write_stdout(&format!("{}\n", serde_json::to_string_pretty(value)?)),
        Mode::Text => write_stdout(&text(value)),
    }
}

/// `pgplane databases user dependencies`.
pub async fn show_dependencies(
    api: &Api,
    out: &OutputArgs,
    cluster_id: &str,
    user: &str,
) -> anyhow::Result<()> {
    let path = ["databases", cluster_id, "users", user, "dependencies"];
    let report = api.fetch(Method::GET, &path, None, "dependencies").await?;
    print(out, &report, |r| render_dependencies(user, r))
}

/// `pgplane databases user delete`: unless forced, shows what the user owns and asks (saying
/// who inherits it); then deletes with the heir or the refusal asked for.
pub async fn delete_user(
    api: &Api,
    cluster_id: &str,
    user: &str,
    reassign_to: Option<&str>,
    refuse_if_owning: bool,
    force: bool,
) -> anyhow::Result<()> {
    if !force {
        let path = ["databases", cluster_id, "users", user, "dependencies"];
        let question = match api.fetch(Method::GET, &path, None, "dependencies").await {
            Ok(report) if report["owns_objects"] == true => {
                eprint!("{}", render_dependencies(user, &report));
                let heir = reassign_to.unwrap_or("the primary user");
                if refuse_if_owning {
                    None
                } else {
                    Some(format!("what it owns goes to {heir}"))
                }
            }
            Ok(_) => Some("it owns nothing".to_string()),
            Err(e) => {
                eprintln!("Warning: the dependency preview is not available: {e}");
                Some(format!("what it owns goes to {}", reassign_to.unwrap_or("the primary user")))
            }
        };
        match question {
            Some(note) => prompt::confirm(&format!("Delete the database user {user:?} ({note})?"))?,
            // The server refuses it anyway (409); say so without asking.
            None => anyhow::bail!("the user {user:?} owns objects; nothing was changed (--refuse-if-owning)"),
        }
    }
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(heir) = reassign_to {
        query.push(("reassign_to", heir));
    }
    if refuse_if_owning {
        query.push(("if_owns", "refuse"));
    }
    api.call_with_query(Method::DELETE, &["databases", cluster_id, "users", user], &query, None).await?;
    Ok(())
}

/// `pgplane databases plan`.
pub async fn show_plan(api: &Api, out: &OutputArgs, cluster_id: &str) -> anyhow::Result<()> {
    let plan = api.fetch(Method::GET, &["databases", cluster_id, "plan"], None, "plan").await?;
    print(out, &plan, render_plan)
}

/// `pgplane databases create --dry-run`.
pub async fn dry_run_registration(api: &Api, out: &OutputArgs, body: &Value) -> anyhow::Result<()> {
    let query = [("dry_run", "true")];
    let mut answer = api.call_with_query(Method::POST, &["databases"], &query, Some(body)).await?;
    let preview = answer["registration"].take();
    print(out, &preview, render_registration)
}

/// Groups as `  table: 3 (public.a, public.b, …)`.
fn render_groups(text: &mut String, title: &str, groups: &Value) {
    let Some(groups) = groups.as_array().filter(|g| !g.is_empty()) else { return };
    let _ = writeln!(text, "  {title}:");
    for g in groups {
        let count = g["count"].as_i64().unwrap_or(0);
        let first: Vec<&str> =
            g["first"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let more = if count > first.len() as i64 { ", …" } else { "" };
        let _ =
            writeln!(text, "    {}: {count} ({}{more})", g["kind"].as_str().unwrap_or("?"), first.join(", "));
    }
}

fn render_dependencies(user: &str, r: &Value) -> String {
    let mut text = String::new();
    if r["exists"] != true {
        let _ = writeln!(text, "The user {user:?} does not exist on the target: nothing depends on it.");
        return text;
    }
    let verdict = if r["owns_objects"] == true { "owns objects" } else { "owns nothing" };
    let _ = writeln!(text, "The user {user:?} {verdict} on the target.");
    if !r["server"]["owned"].as_array().is_none_or(Vec::is_empty)
        || !r["server"]["privileges"].as_array().is_none_or(Vec::is_empty)
    {
        let _ = writeln!(text, "Server-wide:");
        render_groups(&mut text, "owns", &r["server"]["owned"]);
        render_groups(&mut text, "privileges on", &r["server"]["privileges"]);
    }
    for db in r["databases"].as_array().into_iter().flatten() {
        let _ = writeln!(text, "Database {}:", db["database"]);
        if let Some(error) = db["error"].as_str() {
            let _ = writeln!(text, "  cannot be read: {error}");
        }
        render_groups(&mut text, "owns", &db["owned"]);
        render_groups(&mut text, "privileges on", &db["privileges"]);
        for d in db["default_privileges"].as_array().into_iter().flatten() {
            let schema = d["schema"].as_str().map(|s| format!(" in schema {s}")).unwrap_or_default();
            let acl: Vec<&str> =
                d["acl"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let _ = writeln!(
                text,
                "  default privileges on new {}{schema}: {}",
                d["object_type"].as_str().unwrap_or("?"),
                acl.join(" ")
            );
        }
    }
    for (title, key) in [("Member of", "member_of"), ("Members", "members")] {
        let roles: Vec<&str> =
            r[key].as_array().into_iter().flatten().filter_map(|m| m["role"].as_str()).collect();
        if !roles.is_empty() {
            let _ = writeln!(text, "{title}: {}", roles.join(", "));
        }
    }
    if r["truncated"] == true {
        let _ = writeln!(text, "(more databases depend on it than are shown)");
    }
    text
}

fn render_plan(plan: &Value) -> String {
    let mut text = String::new();
    let steps = plan["steps"].as_array().map(Vec::as_slice).unwrap_or_default();
    let _ = writeln!(
        text,
        "PostgreSQL {}: {} step(s), {} object(s) in sync.",
        plan["server_version"].as_str().unwrap_or("?"),
        steps.len(),
        plan["in_sync"]
    );
    let mut phase = None;
    for step in steps {
        if step["phase"].is_string() && phase != step["phase"].as_str() {
            phase = step["phase"].as_str();
            let _ = writeln!(text, "{}:", phase.unwrap_or_default().replace('_', " "));
        }
        let drift = step["drift"].as_str().map(|d| format!(" [drift: {d}]")).unwrap_or_default();
        let _ = writeln!(
            text,
            "{} {} {}{drift}",
            step["step"].as_str().unwrap_or("?"),
            step["kind"].as_str().unwrap_or("?"),
            step["name"]
        );
        if let Some(note) = step["note"].as_str() {
            let _ = writeln!(text, "  {note}");
        }
        for s in step["statements"].as_array().into_iter().flatten() {
            let place = s["database"].as_str().map(|d| format!("[in {d}] ")).unwrap_or_default();
            let _ = writeln!(text, "  {place}{};", s["sql"].as_str().unwrap_or(""));
        }
    }
    text
}

fn render_registration(r: &Value) -> String {
    let mut text = String::new();
    let verdict = if r["would_register"] == true { "would be registered" } else { "would be refused" };
    let _ =
        writeln!(text, "The server (PostgreSQL {}) {verdict}.", r["server_version"].as_str().unwrap_or("?"));
    for why in r["refusals"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        let _ = writeln!(text, "  refused: {why}");
    }
    for a in r["actions"].as_array().into_iter().flatten() {
        let _ = writeln!(
            text,
            "{} {} {}: {}",
            a["action"].as_str().unwrap_or("?"),
            a["kind"].as_str().unwrap_or("?"),
            a["name"],
            a["detail"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(
        text,
        "Left untouched: {} role(s), {} database(s).",
        r["untouched"]["role_count"], r["untouched"]["database_count"]
    );
    text
}
