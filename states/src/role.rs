//! Roles: TOML files listing states, with their settings defaults and the secrets they need.
//! Loaded from the binary's embedded copy or from a directory (`--roles DIR`), then compiled
//! into engine nodes. Every error names the file, line and key.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use crate::content::sha256_hex;
use crate::context::Context;
use crate::engine::{order, Node};
use crate::module::{self, Builder};
use crate::notify::Notification;
use crate::settings::Schema;
use crate::template::Templates;

/// Where role files and templates come from. Paths are relative: `app.toml`,
/// `templates/motd.hbs`.
pub trait RoleSource {
    fn read(&self, file: &str) -> Option<String>;
    /// How `file` is named in messages.
    fn label(&self, file: &str) -> String;
    /// The role names on offer (`*.toml` files).
    fn role_names(&self) -> Vec<String>;
}

/// Roles from a directory, for people who fork their own.
pub struct DirSource(pub PathBuf);

impl RoleSource for DirSource {
    fn read(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.0.join(file)).ok()
    }

    fn label(&self, file: &str) -> String {
        self.0.join(file).display().to_string()
    }

    fn role_names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".toml").map(str::to_string))
            .collect();
        v.sort();
        v
    }
}

/// Roles compiled into the binary: (relative path, text) pairs.
pub struct EmbeddedSource(pub &'static [(&'static str, &'static str)]);

impl RoleSource for EmbeddedSource {
    fn read(&self, file: &str) -> Option<String> {
        self.0.iter().find(|(p, _)| *p == file).map(|(_, t)| t.to_string())
    }

    fn label(&self, file: &str) -> String {
        format!("roles/{file} (embedded)")
    }

    fn role_names(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(p, _)| !p.contains('/'))
            .filter_map(|(p, _)| p.strip_suffix(".toml").map(str::to_string))
            .collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleFile {
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    includes: Vec<String>,
    #[serde(default)]
    settings: Schema,
    #[serde(default)]
    secret: Vec<SecretSpec>,
    #[serde(default)]
    state: Vec<toml::Spanned<toml::Table>>,
    /// `[discover.NAME]`: peers looked up at the start of a run, as template data `peers.NAME`.
    #[serde(default)]
    discover: std::collections::BTreeMap<String, toml::Table>,
    /// Firewall rules this role needs (`"tcp/443"`, `"tcp/5432 from {{settings.private_cidr}}"`),
    /// merged across the node's roles into template data `firewall`.
    #[serde(default)]
    firewall: Vec<String>,
}

/// A secret a role needs.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    pub name: String,
    pub prompt: String,
    #[serde(default = "default_min_length")]
    pub min_length: usize,
    /// The operator may press enter to have one generated.
    #[serde(default)]
    pub generate: bool,
    /// Needed only when this renders truthy with the settings (e.g. `"{{settings.dns_server}}"`).
    pub when: Option<String>,
}

impl SecretSpec {
    /// Whether the settings make this secret needed.
    pub fn needed(&self, t: &Templates, settings: &serde_json::Value) -> Result<bool> {
        let Some(cond) = &self.when else { return Ok(true) };
        let data = serde_json::json!({ "settings": settings });
        let v = t.render_inline(cond, &data).map_err(|e| anyhow!("secret `{}`: `when`: {e:#}", self.name))?;
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

pub struct StateSpec {
    pub id: String,
    pub kind: String,
    pub requires: Vec<String>,
    pub notify: Vec<Notification>,
    /// `when = "{{settings.domain}}"` or `{ setting = "x" }`: the state exists only when this
    /// is truthy (not empty, `false`, `0` or an unset setting).
    pub when: Option<toml::Value>,
    pub params: toml::Table,
    pub origin: Origin,
    /// Line of each parameter key, to point errors at it.
    key_lines: HashMap<String, usize>,
}

/// The loaded roles, includes resolved (each role once, includes first).
#[derive(Default)]
pub struct RoleSet {
    pub roles: Vec<String>,
    /// Settings declared by the roles.
    pub settings: Schema,
    pub secrets: Vec<SecretSpec>,
    pub states: Vec<StateSpec>,
    /// Discovery specs by peer-set name (parameters may use settings).
    pub discover: std::collections::BTreeMap<String, toml::Table>,
    /// Firewall rules of all loaded roles, in role order (may use settings).
    pub firewall: Vec<String>,
}

/// Load `names` and what they include.
pub fn load(source: &dyn RoleSource, names: &[String]) -> Result<RoleSet> {
    let mut set = RoleSet::default();
    for n in names {
        load_one(source, n, &mut set, &mut Vec::new())?;
    }
    let mut seen: HashMap<&str, &Origin> = HashMap::new();
    for s in &set.states {
        if let Some(first) = seen.insert(&s.id, &s.origin) {
            bail!("{}: state id `{}` is already defined at {first}", s.origin, s.id);
        }
    }
    Ok(set)
}

fn load_one(source: &dyn RoleSource, name: &str, set: &mut RoleSet, path: &mut Vec<String>) -> Result<()> {
    if set.roles.iter().any(|r| r == name) {
        return Ok(());
    }
    if path.iter().any(|r| r == name) {
        bail!("roles include each other: {} -> {name}", path.join(" -> "));
    }
    let file = format!("{name}.toml");
    let label = source.label(&file);
    let Some(text) = source.read(&file) else {
        bail!("unknown role `{name}` (available: {})", source.role_names().join(", "));
    };
    let rf: RoleFile = toml::from_str(&text).map_err(|e| anyhow!("{label}: {e}"))?;
    path.push(name.to_string());
    for inc in &rf.includes {
        load_one(source, inc, set, path)?;
    }
    path.pop();

    for (name, spec) in rf.settings {
        match set.settings.get(&name) {
            Some(have) if have.kind != spec.kind || have.list != spec.list => {
                bail!("{label}: setting `{name}` is declared again with another type")
            }
            _ => {
                set.settings.insert(name, spec);
            }
        }
    }
    for s in rf.secret {
        match set.secrets.iter_mut().find(|have| have.name == s.name) {
            // Declared by two roles (`app db` on one node): needed if either needs it,
            // generated if either allows, the stricter length.
            Some(have) => {
                if have.when.is_none() || s.when.is_none() {
                    have.when = None;
                }
                have.generate |= s.generate;
                have.min_length = have.min_length.max(s.min_length);
            }
            None => set.secrets.push(s),
        }
    }
    let lines = Lines::new(&text);
    set.firewall.extend(rf.firewall);
    for (name, spec) in rf.discover {
        if set.discover.insert(name.clone(), spec).is_some() {
            bail!("{label}: `[discover.{name}]` is already declared by another role");
        }
    }
    for spanned in rf.state {
        let line = lines.line_at(spanned.span().start);
        set.states.push(state_spec(&lines, &label, line, spanned.into_inner())?);
    }
    set.roles.push(name.to_string());
    Ok(())
}

fn state_spec(lines: &Lines, label: &str, line: usize, mut t: toml::Table) -> Result<StateSpec> {
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
            Some(v) => v.try_into::<Vec<String>>().map_err(|_| {
                anyhow!("{}: state `{id}`: `{key}` must be a list of strings", at(key))
            }),
        }
    };
    let when = t.remove("when");
    let requires = list(&mut t, "requires")?;
    let notify = list(&mut t, "notify")?
        .iter()
        .map(|n| Notification::parse(n).map_err(|e| anyhow!("{}: state `{id}`: {e}", at("notify"))))
        .collect::<Result<_>>()?;
    Ok(StateSpec { id, kind, requires, notify, when, params: t, origin: Origin { file: label.into(), line }, key_lines })
}

/// Build the engine's nodes; every bad state is reported, not just the first, and the
/// `requires` graph is checked. Nothing on the system is touched.
pub fn compile(
    set: RoleSet,
    source: &dyn RoleSource,
    cx: &Context,
    templates: &mut Templates,
    data: &serde_json::Value,
) -> Result<Vec<Node>> {
    Ok(compile_with_fingerprints(set, source, cx, templates, data)?.0)
}

/// Digests of each state's desired state (parameters and rendered content), by id.
pub type Fingerprints = HashMap<String, String>;

/// `compile`, also returning each state's fingerprint: a report compares them with the last
/// run's to tell drift from intended change.
pub fn compile_with_fingerprints(
    set: RoleSet,
    source: &dyn RoleSource,
    cx: &Context,
    templates: &mut Templates,
    data: &serde_json::Value,
) -> Result<(Vec<Node>, Fingerprints)> {
    let mut b = Builder { cx, templates, source, data };
    let mut fingerprints = Fingerprints::new();
    let mut nodes = Vec::with_capacity(set.states.len());
    let mut errors = Vec::new();
    let mut left_out = std::collections::HashSet::new();
    for spec in set.states {
        let StateSpec { id, kind, requires, notify, when, params, origin, key_lines } = spec;
        if let Some(cond) = when {
            match included(cond, b.templates, data) {
                Ok(true) => {}
                Ok(false) => {
                    left_out.insert(id);
                    continue;
                }
                Err(e) => {
                    let line = key_lines.get("when").copied().unwrap_or(origin.line);
                    errors.push(format!("{}, line {line}: state `{id}` ({kind}): `when`: {e:#}", origin.file));
                    continue;
                }
            }
        }
        let built = resolve_params(params, b.templates, data)
            .and_then(|params| Ok((format!("{kind}\n{id}\n{params}"), module::build(&kind, id.clone(), params, &mut b)?)));
        match built {
            Ok((described, state)) => {
                let digest = state.digest().unwrap_or_default();
                let fingerprint = sha256_hex(format!("{described}\n{digest}").as_bytes())[..16].to_string();
                fingerprints.insert(id, fingerprint);
                nodes.push(Node { state, requires, notify })
            }
            Err(e) => {
                let msg = format!("{e:#}");
                let line = quoted_words(&msg)
                    .find_map(|w| key_lines.get(w))
                    .copied()
                    .unwrap_or(origin.line);
                errors.push(format!("{}, line {line}: state `{id}` ({kind}): {msg}", origin.file));
            }
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    // What required a state that was left out does not wait for it.
    for n in &mut nodes {
        n.requires.retain(|r| !left_out.contains(r));
    }
    order(&nodes)?;
    Ok((nodes, fingerprints))
}

/// The parameters (settings filled in) of each state of type `kind` that `when` keeps, by id:
/// for commands that act on states without running them (`decommission`).
pub fn instances(states: &[StateSpec], kind: &str, t: &Templates, data: &serde_json::Value) -> Result<Vec<(String, toml::Table)>> {
    let mut out = Vec::new();
    for s in states.iter().filter(|s| s.kind == kind) {
        if let Some(cond) = &s.when {
            if !included(cond.clone(), t, data)? {
                continue;
            }
        }
        out.push((s.id.clone(), resolve_params(s.params.clone(), t, data).map_err(|e| anyhow!("state `{}`: {e:#}", s.id))?));
    }
    Ok(out)
}

/// Whether a `when` condition holds.
fn included(cond: toml::Value, t: &Templates, data: &serde_json::Value) -> Result<bool> {
    if let toml::Value::Table(tab) = &cond {
        if let Some(name) = tab.get("setting").and_then(|n| n.as_str()) {
            let v = &data["settings"][name];
            return Ok(!(v.is_null()
                || v == &serde_json::Value::Bool(false)
                || v.as_str() == Some("")
                || v.as_array().is_some_and(|a| a.is_empty())));
        }
    }
    let mut one = toml::Table::new();
    one.insert("when".into(), cond);
    let resolved = resolve_params(one, t, data)?;
    Ok(match resolved.get("when") {
        // Rendered empty (and so left out).
        None => false,
        Some(toml::Value::String(s)) => !matches!(s.trim(), "" | "false" | "0"),
        Some(toml::Value::Boolean(b)) => *b,
        Some(other) => bail!("must be a string template, a boolean or {{ setting = \"name\" }}, not {other}"),
    })
}

/// Parameters with settings filled in: a string containing `{{` is rendered as a template
/// (strict; no secrets), a table `{ setting = "name" }` becomes that setting's value with its
/// type (a list stays a list), and `{ data = "a.b" }` any template data (unset: an error). A
/// parameter that comes out empty (an unset setting) is left out, as if not given.
pub fn resolve_params(params: toml::Table, t: &Templates, data: &serde_json::Value) -> Result<toml::Table> {
    fn resolve(v: toml::Value, t: &Templates, data: &serde_json::Value) -> Result<toml::Value> {
        Ok(match v {
            toml::Value::String(s) if s.contains("{{") => toml::Value::String(t.render_inline(&s, data)?),
            toml::Value::Table(tab) if tab.len() == 1 && tab.get("setting").is_some_and(|n| n.is_str()) => {
                let name = tab["setting"].as_str().unwrap_or_default();
                let value = &data["settings"][name];
                if value.is_null() {
                    // Unset: the parameter is left out (the caller drops this marker).
                    return Ok(toml::Value::String(String::new()));
                }
                toml::Value::try_from(value).map_err(|e| anyhow!("setting `{name}`: {e}"))?
            }
            toml::Value::Table(tab) if tab.len() == 1 && tab.get("data").is_some_and(|n| n.is_str()) => {
                let path = tab["data"].as_str().unwrap_or_default();
                let value = path.split('.').fold(data, |v, k| &v[k]);
                if value.is_null() {
                    bail!("template data `{path}` is not set");
                }
                toml::Value::try_from(value).map_err(|e| anyhow!("`{path}`: {e}"))?
            }
            // A list item that renders empty is left out: `["{{settings.domain}}"]` is empty
            // when no domain is set, and `{{#if}}` makes an item conditional.
            toml::Value::Array(a) => toml::Value::Array(
                a.into_iter()
                    .map(|v| resolve(v, t, data))
                    .filter(|v| !matches!(v, Ok(toml::Value::String(s)) if s.trim().is_empty()))
                    .collect::<Result<_>>()?,
            ),
            toml::Value::Table(tab) => toml::Value::Table(
                tab.into_iter().map(|(k, v)| Ok((k, resolve(v, t, data)?))).collect::<Result<_>>()?,
            ),
            other => other,
        })
    }
    let mut out = toml::Table::new();
    for (k, v) in params {
        let templated = match &v {
            toml::Value::String(s) => s.contains("{{"),
            toml::Value::Table(t) => t.len() == 1 && t.contains_key("setting"),
            _ => false,
        };
        let v = resolve(v, t, data).map_err(|e| anyhow!("`{k}`: {e:#}"))?;
        // An optional parameter templated from an unset setting is left out, not "".
        if !(templated && v.as_str().is_some_and(|s| s.trim().is_empty())) {
            out.insert(k, v);
        }
    }
    Ok(out)
}

/// Line numbers of a role file, found by binary search (roles may hold 10,000 states).
struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Lines { text, starts }
    }

    /// 1-based line of byte `offset`.
    fn line_at(&self, offset: usize) -> usize {
        self.starts.partition_point(|s| *s <= offset)
    }

    /// Lines of the keys of the table that starts at `start` (1-based), up to the next header.
    fn key_lines(&self, start: usize, t: &toml::Table) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        let from = self.starts.get(start.saturating_sub(1)).copied().unwrap_or(self.text.len());
        for (i, line) in self.text[from..].lines().enumerate() {
            let l = line.trim_start();
            if i > 0 && l.starts_with('[') {
                break;
            }
            if let Some((k, _)) = l.split_once('=') {
                let k = k.trim().trim_matches('"');
                if t.contains_key(k) || ["id", "type", "requires", "notify", "when"].contains(&k) {
                    out.entry(k.to_string()).or_insert(start + i);
                }
            }
        }
        out
    }
}

/// Words between backticks in an error message, in order.
fn quoted_words(msg: &str) -> impl Iterator<Item = &str> {
    msg.split('`').skip(1).step_by(2)
}

/// Every setting any role of `source` declares: what a site file may name.
/// `loaded` already holds the node's own roles, so only the others are read.
pub fn known_settings(source: &dyn RoleSource, loaded: &RoleSet) -> Result<Schema> {
    let mut all = loaded.settings.clone();
    for name in source.role_names().into_iter().filter(|n| !loaded.roles.contains(n)) {
        let file = format!("{name}.toml");
        let text = source.read(&file).unwrap_or_default();
        let rf: RoleFile = toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", source.label(&file)))?;
        for (k, v) in rf.settings {
            all.entry(k).or_insert(v);
        }
    }
    Ok(all)
}
