//! Talking to the person at the terminal: confirming deletes (doctl's rules: ask on a
//! terminal, else require `--force`) and reading secrets (tokens, passwords) from a hidden
//! prompt on a terminal, else from the first line of standard input.

use std::io::{self, BufRead, IsTerminal};

use anyhow::{bail, Context};
use dialoguer::{Confirm, Password};

/// Goes on if `force` is set or the person confirms; otherwise the operation is aborted.
pub fn confirm_delete(noun: &str, name: &str, force: bool) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    confirm(&format!("Are you sure you want to delete the {noun} {name:?}?"))
}

/// Goes on if the person answers yes to `question` on a terminal; otherwise (no terminal, or
/// no) the operation is aborted.
pub fn confirm(question: &str) -> anyhow::Result<()> {
    if !io::stdin().is_terminal() {
        eprintln!("Warning: Requires confirmation. Use the `--force` flag to continue without confirmation.");
        bail!("Operation aborted.");
    }
    let confirmed =
        Confirm::new().with_prompt(question).default(false).interact().context("reading the confirmation")?;
    if !confirmed {
        bail!("Operation aborted.");
    }
    Ok(())
}

/// Reads a secret: a hidden prompt on a terminal, else the first line of standard input.
pub fn read_secret(what: &str) -> anyhow::Result<String> {
    if io::stdin().is_terminal() {
        return Password::new()
            .with_prompt(format!("Enter the {what}"))
            .interact()
            .with_context(|| format!("reading the {what}"));
    }
    let mut line = String::new();
    io::stdin()
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("reading the {what} from standard input"))?;
    let secret = line.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        bail!("no {what} on standard input");
    }
    Ok(secret.to_string())
}
