//! The local PostgreSQL server, as `pg_role` and `pg_database` see it: `psql` on the Unix
//! socket as the `postgres` OS user (peer authentication: no password of ours is involved),
//! SQL always on standard input (never in argv, which is logged and visible in /proc).
//!
//! Observation is ONE query per run, shared by every pg state (roles with their password
//! verifiers, databases with their owners); a state that changed something invalidates it. On
//! the running system that query goes straight to the socket (`pg_socket`), without psql.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use crate::engine::context::Context;
use crate::engine::runner::Cmd;

/// Every role and database, as JSON in one row.
pub const OBSERVE: &str = "SELECT json_build_object(\
'in_recovery', pg_is_in_recovery(), \
'roles', (SELECT coalesce(json_object_agg(rolname, json_build_object('login', rolcanlogin, 'replication', rolreplication, 'password', rolpassword)), '{}') FROM pg_authid), \
'databases', (SELECT coalesce(json_object_agg(datname, pg_get_userbyid(datdba)), '{}') FROM pg_database));\n";

/// Before any statement that carries a password verifier: keep the statement out of the
/// server log, whatever logging the cluster has (also when the statement fails).
pub const QUIET: &str =
    "SET log_statement = 'none';\nSET log_min_error_statement = 'panic';\nSET log_min_duration_statement = -1;\n";

#[derive(Clone, Debug, Deserialize)]
pub struct RoleRow {
    pub login: bool,
    pub replication: bool,
    /// `rolpassword`: a SCRAM verifier, an MD5 hash, or none.
    pub password: Option<String>,
}

/// What the server holds, as one query answered it.
#[derive(Debug, Deserialize)]
pub struct Snapshot {
    /// A replica (Patroni's, or any standby): read-only; the leader makes every change.
    pub in_recovery: bool,
    pub roles: HashMap<String, RoleRow>,
    /// Database name -> owner's role name.
    pub databases: HashMap<String, String>,
}

/// `psql` as the `postgres` OS user on the default socket, `sql` on stdin. `-X`: no psqlrc;
/// `-q -A -t`: bare rows; ON_ERROR_STOP: the first error fails the whole run. psql echoes
/// nothing of its input without `-e`/`-a`.
///
/// `setpriv` rather than `runuser`: no PAM session, so a no-op run leaves no
/// "session opened" line in the journal. `env -i`: psql gets none of our environment (which
/// may hold `BOOTSTRAP_SECRET_*`, readable by the postgres user in /proc), and `-C /` spares
/// it a warning about root's home directory.
pub fn cmd(cx: &Context, sql: &str) -> Cmd {
    Cmd::new("setpriv")
        // The kernel clears the parent-death signal when the uid changes: keep it, so psql
        // ends with a killed run.
        .args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--pdeathsig", "keep", "env", "-i", "-C", "/"])
        .arg(psql_path(cx))
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", "postgres"])
        .stdin(sql.as_bytes())
}

/// The newest installed psql binary itself: Debian's `/usr/bin/psql` is a Perl wrapper
/// (pg_wrapper) that costs ~60 ms a run, most of a no-op run's budget.
fn psql_path(cx: &Context) -> String {
    let newest = std::fs::read_dir(cx.path("/usr/lib/postgresql"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|v| cx.path(format!("/usr/lib/postgresql/{v}/bin/psql")).is_file())
        .max();
    newest.map_or_else(|| "psql".to_string(), |v| format!("/usr/lib/postgresql/{v}/bin/psql"))
}

/// The run's shared snapshot, queried on first use.
pub fn snapshot(cx: &Context) -> Result<std::sync::Arc<Snapshot>> {
    cx.shared.observe(|| {
        let answer = if cx.direct() { observe_on_socket(cx)? } else { observe_with_psql(cx)? };
        // The answer holds every role's password verifier: never quote it.
        // Nor quote serde's message: it may hold a string of the answer.
        serde_json::from_str(answer.trim()).map_err(|e| {
            anyhow!(
                "unexpected answer from PostgreSQL ({:?} error at line {} column {}, {} bytes)",
                e.classify(),
                e.line(),
                e.column(),
                answer.len()
            )
        })
    })
}

/// Where Debian's (and Patroni's) PostgreSQL listens locally.
pub const SOCKET: &str = "/var/run/postgresql/.s.PGSQL.5432";

/// On the running system: the socket spoken to directly (no child process in a no-op run).
fn observe_on_socket(cx: &Context) -> Result<String> {
    crate::sys::pg_socket::query_text(&cx.path(SOCKET), "postgres", OBSERVE).map_err(|e| {
        anyhow!(
            "cannot reach PostgreSQL on its local socket as the postgres user (not installed or not running?): {e:#}"
        )
    })
}

/// Elsewhere (a root tree, a test's runner): through psql, as every change is made.
fn observe_with_psql(cx: &Context) -> Result<String> {
    let out = cx.runner.run(&cmd(cx, OBSERVE))?;
    if !out.success() {
        bail!(
            "cannot reach PostgreSQL on its local socket as the postgres user (not installed or not running?): {}",
            out.message()
        );
    }
    Ok(out.stdout)
}

/// Run `sql` (statements built by the pg states); the next plan observes afresh.
pub fn execute(cx: &Context, sql: &str) -> Result<()> {
    let out = cx.runner.run(&cmd(cx, sql));
    cx.shared.invalidate::<Snapshot>();
    let out = out?;
    if !out.success() {
        // psql may quote the failing statement (`LINE 1: ...`): never a verifier in a message.
        bail!("psql failed: {}", redact_verifiers(out.message()));
    }
    Ok(())
}

fn redact_verifiers(text: &str) -> String {
    text.split_inclusive(char::is_whitespace)
        .map(|w| if w.contains("SCRAM-SHA-256$") { "<verifier> " } else { w })
        .collect()
}

/// Names the pg states accept: what PostgreSQL takes unquoted, so they read the same in SQL,
/// `pg_hba.conf` and connection strings. `pg_` is reserved for the system's own roles.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with("pg_");
    if !ok {
        bail!("`{name}` is not a valid {what} name here (lowercase letters, digits and `_`, not starting with a digit or `pg_`, at most 63)");
    }
    Ok(())
}

/// A checked name as an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string as an SQL literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
