//! Compiling the loaded roles into the engine's nodes: `when` evaluated, parameters
//! resolved, each state built by its kind's constructor, claims and `requires` checked. Every
//! bad state is reported, not only the first; nothing on the system is touched.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Result};

use crate::engine::build::{Builder, Render};
use crate::engine::content::{sha256_hex, Content};
use crate::engine::context::Context;
use crate::engine::contract::{Claim, State, Thing};
use crate::engine::deferred::NeedsSecrets;
use crate::engine::run::{order, Node};
use crate::kinds;
use crate::role::for_each::{self, Expanded, Instance};
use crate::role::lines::quoted_words;
use crate::role::load::RoleSet;
use crate::role::params::{included, resolve_params};
use crate::role::parse::{Origin, StateSpec};
use crate::role::source::RoleSource;
use crate::role::template::{Data, Templates};

/// The compiled states of a run.
pub struct Compiled {
    pub nodes: Vec<Node>,
    /// Each state's digest of its desired state, by id: a report compares them with the last
    /// run's to tell drift from intended change.
    pub fingerprints: Fingerprints,
}

/// Digests of each state's desired state (parameters and rendered content), by id.
pub type Fingerprints = HashMap<String, String>;

/// Templates of the role source, loaded on first use and rendered with the run's data.
struct RoleTemplates<'a> {
    templates: &'a mut Templates,
    source: &'a dyn RoleSource,
    data: &'a Data,
}

impl RoleTemplates<'_> {
    /// Loads `name` and every template it includes as a partial (`{{> other.hbs}}`).
    fn load(&mut self, name: &str, depth: usize) -> Result<()> {
        if self.templates.has(name) {
            return Ok(());
        }
        if depth > 8 {
            bail!("template `{name}`: partials nested too deep (do they include each other?)");
        }
        let file = format!("templates/{name}");
        let Some(text) = self.source.read(&file)? else {
            bail!("template `{name}` not found (looked for {})", self.source.label(&file));
        };
        self.templates.add(name, &text)?;
        for partial in partials(&text) {
            self.load(partial, depth + 1)?;
        }
        Ok(())
    }
}

/// The names a template includes: `{{> NAME}}` (also `{{~> NAME}}`).
fn partials(text: &str) -> Vec<&str> {
    text.match_indices("{{")
        .filter_map(|(i, _)| {
            let rest = text[i + 2..].trim_start_matches('~').strip_prefix('>')?;
            rest.trim_start().split(|c: char| c.is_whitespace() || c == '}').next().filter(|n| !n.is_empty())
        })
        .collect()
}

impl Render for RoleTemplates<'_> {
    fn render(&mut self, name: &str) -> Result<Content> {
        self.load(name, 0)?;
        self.templates.render(name, self.data)
    }
}

/// Build the engine's nodes. Every bad state is reported, not just the first; then what the
/// states claim and the `requires` graph are checked. Nothing on the system is touched.
pub fn compile(
    set: RoleSet,
    source: &dyn RoleSource,
    cx: &Context,
    templates: &mut Templates,
    data: &Data,
) -> Result<Compiled> {
    let mut fingerprints = Fingerprints::new();
    let Expanded { instances, looped, mut errors } = for_each::expand(set.states, templates, data);
    let mut nodes = Vec::with_capacity(instances.len());
    let mut origins = Vec::with_capacity(instances.len());
    let mut left_out = HashSet::new();
    for Instance { spec, item } in instances {
        let StateSpec { id, kind, requires, notify, when, for_each: _, params, origin, key_lines } = spec;
        let item_data = item.map(|item| for_each::with_item(data, &item));
        let data = item_data.as_ref().unwrap_or(data);
        if let Some(cond) = when {
            match included(cond, templates, data) {
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
        let built = kinds::find(&kind).and_then(|k| {
            let params = resolve_params(params, templates, data)?;
            let described = format!("{kind}\n{id}\n{params}");
            // A dry run without some secret: what a state asks of those is recorded.
            let dry = cx.secrets.has_missing();
            let target = if dry { target_of(&params) } else { String::new() };
            if dry {
                cx.secrets.take_asked_missing();
            }
            let mut render = RoleTemplates { templates: &mut *templates, source, data };
            let mut builder = Builder::new(&id, cx, &mut render);
            builder.authoritative = data.value()["node"]["authoritative"].as_bool();
            let state = (k.build)(params, &mut builder);
            // A dry run without a secret this state needs: shown as pending, with the reason.
            let missing = if dry { cx.secrets.take_asked_missing() } else { Vec::new() };
            if !missing.is_empty() {
                return Ok((k.name, described, Box::new(NeedsSecrets { target, secrets: missing }) as Box<dyn State>));
            }
            Ok((k.name, described, state?))
        });
        match built {
            Ok((kind, described, state)) => {
                let digest = state.digest().unwrap_or_default();
                let fingerprint = sha256_hex(format!("{described}\n{digest}").as_bytes())[..16].to_string();
                fingerprints.insert(id.clone(), fingerprint);
                nodes.push(Node { id, kind, state, requires, notify });
                origins.push(origin);
            }
            Err(e) => {
                let msg = format!("{e:#}");
                let line = quoted_words(&msg).find_map(|w| key_lines.get(w)).copied().unwrap_or(origin.line);
                errors.push(format!("{}, line {line}: state `{id}` ({kind}): {msg}", origin.file));
            }
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    check_claims(&nodes, &origins)?;
    // What requires a looped state waits for each of its items; what required a state that
    // was left out does not wait for it.
    for n in &mut nodes {
        n.requires = std::mem::take(&mut n.requires)
            .into_iter()
            .flat_map(|r| looped.get(&r).cloned().unwrap_or_else(|| vec![r]))
            .filter(|r| !left_out.contains(r))
            .collect();
    }
    order(&nodes)?;
    Ok(Compiled { nodes, fingerprints })
}

/// What a state manages, from its usual parameters, for a state that can't be built.
fn target_of(params: &toml::Table) -> String {
    params.get("path").or(params.get("name")).and_then(|v| v.as_str()).unwrap_or("").to_string()
}

/// Two states owning one thing would undo each other on every run: refuse them, naming both,
/// unless both say they share it with the other's kind.
fn check_claims(nodes: &[Node], origins: &[Origin]) -> Result<()> {
    let mut owner: HashMap<Thing, (usize, Option<&'static str>)> = HashMap::new();
    // Each pair of states once, with everything they both claim.
    let mut clashes: Vec<((usize, usize), Vec<Thing>)> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for Claim { thing, shared_with } in node.state.claims() {
            let Some(&(first, first_shared)) = owner.get(&thing) else {
                owner.insert(thing, (i, shared_with));
                continue;
            };
            let agreed = shared_with == Some(nodes[first].kind) && first_shared == Some(node.kind);
            if first == i || agreed {
                continue;
            }
            match clashes.iter_mut().find(|(pair, _)| *pair == (first, i)) {
                Some((_, things)) => things.push(thing),
                None => clashes.push(((first, i), vec![thing])),
            }
        }
    }
    if clashes.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = clashes
        .into_iter()
        .map(|((a, b), things)| {
            let things: Vec<String> = things.iter().map(ToString::to_string).collect();
            format!(
                "{}: state `{}` ({}) manages {}, which state `{}` ({}) at {} manages already",
                origins[b],
                nodes[b].id,
                nodes[b].kind,
                things.join(" and "),
                nodes[a].id,
                nodes[a].kind,
                origins[a]
            )
        })
        .collect();
    bail!("{}", lines.join("\n"))
}
