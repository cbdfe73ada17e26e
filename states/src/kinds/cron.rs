//! `cron`: one entry in `/etc/cron.d/<name>`, a file of its own (so removing bootstrap's entry
//! never touches anyone else's), with optional environment lines before it.
//!
//! Everything is checked when the role is compiled, because cron itself fails silently: it
//! skips files whose names hold a dot (run-parts rules), logs a bad schedule to syslog and
//! ignores the line, and cuts a command at its first unescaped `%`.
//!
//! `singleton = true`: the job runs once per fleet, on the authoritative node (the site's
//! `admin_node`) only; every other node keeps the file absent. Without etcd there is no lock
//! that moves: while the authoritative node is down the job does not run anywhere (never twice).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use crate::files::conf_file::ConfFile;
use crate::kinds::absent::AbsentState;
use crate::engine::context::Context;
use crate::engine::contract::{Claim, Plan, State};
use crate::engine::build::{params, Builder};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    name: String,
    schedule: String,
    #[serde(default = "root")]
    user: String,
    command: String,
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Once per fleet: only on the authoritative node (the site's `admin_node`); removed on
    /// every other node.
    #[serde(default)]
    singleton: bool,
}

fn root() -> String {
    "root".into()
}

pub fn build(t: toml::Table, b: &mut Builder) -> Result<Box<dyn State>> {
    let p: Params = params(t)?;
    check_name(&p.name)?;
    let path = PathBuf::from("/etc/cron.d").join(&p.name);
    if p.singleton {
        match b.authoritative {
            None => bail!("`singleton = true` runs the job on the fleet's authoritative node: set `admin_node` in the site settings"),
            Some(false) => {
                let mut t = toml::Table::new();
                t.insert("path".into(), toml::Value::String(path.display().to_string()));
                return Ok(Box::new(AbsentState::build(t)?));
            }
            Some(true) => {}
        }
    }
    let schedule = schedule(&p.schedule)?;
    check_user(&p.user)?;
    let mut text = format!("# managed by bootstrap (state `{}`); local changes are overwritten\n", b.id);
    for (k, v) in &p.env {
        text += &env_line(k, v)?;
    }
    text += &format!("{schedule} {} {}\n", p.user, command(&p.command)?);
    let file = ConfFile { path, bytes: text.into_bytes() };
    Ok(Box::new(CronState { file }))
}

struct CronState {
    file: ConfFile,
}

impl State for CronState {
    fn claims(&self) -> Vec<Claim> {
        vec![Claim::path(&self.file.path)]
    }

    fn target(&self) -> String {
        self.file.path.display().to_string()
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        Ok(Plan { changes: self.file.plan(cx)? })
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        self.file.apply(cx, plan)
    }
}

/// cron (run-parts rules) ignores cron.d files with any other character, e.g. `job.cron`.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-') {
        bail!("`name` `{name}` must be letters, digits, `_` and `-` only: cron silently ignores other cron.d file names");
    }
    Ok(())
}

fn check_user(user: &str) -> Result<()> {
    let ok = !user.is_empty()
        && !user.starts_with('-')
        && user.bytes().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c));
    if !ok {
        bail!("`user` `{user}` is not a valid user name");
    }
    Ok(())
}

/// The command as cron must read it: one line, every `%` escaped (cron turns an unescaped `%`
/// into a newline and feeds the rest to the command's stdin).
fn command(cmd: &str) -> Result<String> {
    if cmd.trim().is_empty() || cmd.contains(['\n', '\r']) {
        bail!("`command` must be one non-empty line");
    }
    if cmd.contains("\\%") {
        bail!("`command`: write `%` plainly, not `\\%`: bootstrap escapes it for cron");
    }
    Ok(cmd.trim().replace('%', "\\%"))
}

/// `NAME=value` as cron's environment syntax reads it back unchanged.
fn env_line(k: &str, v: &str) -> Result<String> {
    let name_ok = k.bytes().next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
    if !name_ok {
        bail!("`env` name `{k}` is not a variable name");
    }
    if v.is_empty() {
        // The form crontab(5) documents, e.g. `MAILTO=""` for no mail.
        return Ok(format!("{k}=\"\"\n"));
    }
    if v.contains(['\n', '\r']) || v.trim() != v || v.starts_with(['"', '\'']) {
        bail!("`env` value of `{k}` can't be written for cron: no newlines, no leading quote, no surrounding spaces");
    }
    Ok(format!("{k}={v}\n"))
}

const SPECIALS: &[&str] =
    &["@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field { name: "minute", min: 0, max: 59, names: &[] },
    Field { name: "hour", min: 0, max: 23, names: &[] },
    Field { name: "day-of-month", min: 1, max: 31, names: &[] },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    },
    Field { name: "day-of-week", min: 0, max: 7, names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"] },
];

/// A schedule as Debian's cron accepts it (crontab(5)), normalized to single spaces: five
/// fields of `*`, numbers, ranges `a-b`, steps `*/n` or `a-b/n`, lists `a,b`, and a month or
/// day name on its own; or one of the `@` keywords.
pub fn schedule(s: &str) -> Result<String> {
    let s = s.trim();
    if s.starts_with('@') {
        if SPECIALS.contains(&s) {
            return Ok(s.to_string());
        }
        bail!("schedule `{s}` is not one of {}", SPECIALS.join(", "));
    }
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 5 {
        bail!(
            "schedule `{s}` has {} fields; cron needs 5 (minute hour day-of-month month day-of-week) or an @ keyword",
            parts.len()
        );
    }
    for (p, f) in parts.iter().zip(&FIELDS) {
        field(p, f).map_err(|e| anyhow!("schedule `{s}`: {} field `{p}`: {e}", f.name))?;
    }
    Ok(parts.join(" "))
}

fn field(text: &str, f: &Field) -> Result<()> {
    if f.names.iter().any(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(());
    }
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        if let Some(s) = step {
            if !s.bytes().all(|c| c.is_ascii_digit()) || s.parse::<u32>().map_or(true, |n| n == 0) {
                bail!("step `{s}` must be a number from 1");
            }
        }
        if range == "*" {
            continue;
        }
        match range.split_once('-') {
            Some((a, b)) => {
                if number(a, f)? > number(b, f)? {
                    bail!("range `{range}` runs backwards");
                }
            }
            None => {
                number(range, f)?;
                if step.is_some() {
                    bail!("a step needs `*` or a range before it (`*/n`, `a-b/n`)");
                }
            }
        }
    }
    Ok(())
}

fn number(t: &str, f: &Field) -> Result<u32> {
    if f.names.iter().any(|n| n.eq_ignore_ascii_case(t)) {
        bail!("names only stand alone; use numbers in ranges and lists, as crontab(5) says");
    }
    match t.parse::<u32>() {
        Ok(n) if t.bytes().all(|c| c.is_ascii_digit()) && (f.min..=f.max).contains(&n) => Ok(n),
        _ => bail!("`{t}` is not a number from {} to {}", f.min, f.max),
    }
}
