//! One role file as written: its settings, secrets, discoveries, firewall rules and states,
//! each state with the line of every key so errors point at it.

use std::collections::{BTreeMap, HashMap};

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use crate::engine::notify::Notification;
use crate::role::lines::Lines;
use crate::role::settings::Schema;
use crate::role::template::{Data, Templates};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoleFile {
    #[allow(dead_code)]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) includes: Vec<String>,
    #[serde(default)]
    pub(crate) settings: Schema,
    #[serde(default)]
    pub(crate) secret: Vec<SecretSpec>,
    #[serde(default)]
    pub(crate) state: Vec<toml::Spanned<toml::Table>>,
    /// `[discover.NAME]`: peers looked up at the start of a run, as template data `peers.NAME`.
    #[serde(default)]
    pub(crate) discover: BTreeMap<String, toml::Table>,
    /// Firewall rules this role needs (`"tcp/443"`, `"tcp/5432 from {{settings.private_cidr}}"`),
    /// merged across the node's roles into template data `firewall`.
    #[serde(default)]
    pub(crate) firewall: Vec<String>,
}

/// A secret a role needs.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    pub name: String,
    pub prompt: String,
    #[serde(default = "default_min_length")]
    pub min_length: usize,
    /// For a protocol that uses only so many characters (VRRP's PASS: 8).
    #[serde(default)]
    pub max_length: Option<usize>,
    /// The operator may press enter to have one generated.
    #[serde(default)]
    pub generate: bool,
    /// May stay unset: asked for on a terminal (Enter skips it), never required; the state
    /// that needs it says when and why (a swarm join token, needed only to join).
    #[serde(default)]
    pub optional: bool,
    /// Needed only when this renders truthy with the settings (e.g. `"{{settings.dns_server}}"`).
    pub when: Option<String>,
    /// Never asked for nor stored: derived from another secret each run (one fleet secret
    /// for several purposes, each with its own label).
    #[serde(default)]
    pub derive: Option<Derive>,
}

/// `derive = { from = "db_cluster_secret", label = "patroni replication" }`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Derive {
    pub from: String,
    pub label: String,
}

impl SecretSpec {
    /// Whether the settings make this secret needed.
    /// `settings`: `{ "settings": … }`, as the template data holds them.
    pub fn needed(&self, t: &Templates, settings: &Data) -> Result<bool> {
        let Some(cond) = &self.when else { return Ok(true) };
        let v = t.render_inline(cond, settings).map_err(|e| anyhow!("secret `{}`: `when`: {e:#}", self.name))?;
        Ok(!matches!(v.trim(), "" | "false" | "0"))
    }
}

fn default_min_length() -> usize {
    8
}

/// Where a state was defined.
#[derive(Clone, Debug)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, line {}", self.file, self.line)
    }
}

#[derive(Clone)]
pub struct StateSpec {
    pub id: String,
    pub kind: String,
    pub requires: Vec<String>,
    pub notify: Vec<Notification>,
    /// `when = "{{settings.domain}}"` or `{ setting = "x" }`: the state exists only when this
    /// is truthy (not empty, `false`, `0` or an unset setting).
    pub when: Option<toml::Value>,
    /// `for_each = { setting = "shared_volumes" }` (or a list, or a template): one state per
    /// item, `{{item}}` in its parameters, id `ID.ITEM`; `requires = ["ID"]` waits for all.
    pub for_each: Option<toml::Value>,
    pub params: toml::Table,
    pub origin: Origin,
    /// Line of each parameter key, to point errors at it.
    pub key_lines: HashMap<String, usize>,
}

pub(crate) fn state_spec(lines: &Lines, label: &str, line: usize, mut t: toml::Table) -> Result<StateSpec> {
    let key_lines = lines.key_lines(line, &t);
    let at = |key: &str| Origin { file: label.to_string(), line: *key_lines.get(key).unwrap_or(&line) };
    let take_str = |t: &mut toml::Table, key: &str| -> Result<String> {
        match t.remove(key) {
            Some(toml::Value::String(s)) if !s.is_empty() => Ok(s),
            Some(_) => bail!("{}: `{key}` must be a non-empty string", at(key)),
            None => bail!("{}: a state needs `{key}`", at(key)),
        }
    };
    let id = take_str(&mut t, "id")?;
    let kind = take_str(&mut t, "type")?;
    let list = |t: &mut toml::Table, key: &str| -> Result<Vec<String>> {
        match t.remove(key) {
            None => Ok(Vec::new()),
            Some(v) => v
                .try_into::<Vec<String>>()
                .map_err(|_| anyhow!("{}: state `{id}`: `{key}` must be a list of strings", at(key))),
        }
    };
    let when = t.remove("when");
    let for_each = t.remove("for_each");
    let requires = list(&mut t, "requires")?;
    let notify = list(&mut t, "notify")?
        .iter()
        .map(|n| Notification::parse(n).map_err(|e| anyhow!("{}: state `{id}`: {e}", at("notify"))))
        .collect::<Result<_>>()?;
    Ok(StateSpec {
        id,
        kind,
        requires,
        notify,
        when,
        for_each,
        params: t,
        origin: Origin { file: label.into(), line },
        key_lines,
    })
}
