//! A run from its inputs to compiled states: inputs (roles, settings, secrets) → facts and
//! discovered peers → typed template data → compiled states, ready for the engine. The binary
//! gathers the inputs (prompts, secret sources, the site file) and shows the result; tests
//! build the inputs directly and get exactly what a node would run.

pub mod bundle;
pub mod data;
pub mod discovery;
pub mod peers_store;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;

use crate::engine::context::Context;
use crate::engine::facts::Facts;
use crate::engine::layout::CRON_FILE;
use crate::engine::report::SiteStatus;
use crate::engine::run::Node;
use crate::engine::runner::{Runner, SystemRunner};
use crate::engine::secrets::Secrets;
use crate::role::load::RoleSet;
use crate::role::params::resolve_params;
use crate::role::parse::{Origin, StateSpec};
use crate::role::settings;
use crate::role::source::RoleSource;
use crate::role::template::{Data, Templates};
use crate::role::{compile, Fingerprints};
use data::{firewall_rules, NodeData, Schedule, TemplateData};

/// Everything a run is made from.
pub struct Inputs<'a> {
    /// `/` on a node; a temporary tree in tests.
    pub root: PathBuf,
    pub source: &'a dyn RoleSource,
    /// The node's roles, as named (their includes are in `set`).
    pub roles: Vec<String>,
    pub set: RoleSet,
    /// Settings: the site's values, else the roles' defaults; already checked.
    pub values: toml::Table,
    pub secrets: Secrets,
    /// The cron fields of the node's schedule.
    pub schedule_cron: String,
    pub peers: Peers,
    /// Facts of this machine when `None` (tests give their own).
    pub facts: Option<Facts>,
    pub runner: Box<dyn Runner>,
    /// The site bundle the inputs came from, for the report.
    pub site: Option<SiteStatus>,
}

/// Where the peers of `[discover.NAME]` come from.
pub enum Peers {
    /// Looked up in DNS; `persist`: record the last known good lists (a real run, not a dry one).
    Discover { persist: bool },
    /// As given (tests): `{ NAME: [ { host, address, port, … } ] }`.
    Given(serde_json::Value),
}

/// Compiled states with the context they run in.
pub struct Prepared {
    pub cx: Context,
    pub nodes: Vec<Node>,
    pub fingerprints: Fingerprints,
    pub data: TemplateData,
    /// The role templates the states rendered.
    pub templates: Vec<String>,
    pub site: Option<SiteStatus>,
}

impl<'a> Inputs<'a> {
    /// Inputs with the system's runner, the machine's facts and DNS discovery.
    pub fn new(root: PathBuf, source: &'a dyn RoleSource, roles: Vec<String>, set: RoleSet) -> Inputs<'a> {
        Inputs {
            root,
            source,
            roles,
            set,
            values: toml::Table::new(),
            secrets: Secrets::default(),
            schedule_cron: "*/15 * * * *".into(),
            peers: Peers::Discover { persist: false },
            facts: None,
            runner: Box::new(SystemRunner),
            site: None,
        }
    }
}

/// Compile every state of the node's roles. Touches nothing but the peers store (only with
/// `Peers::Discover { persist: true }`).
pub fn prepare(inputs: Inputs<'_>) -> Result<Prepared> {
    let Inputs { root, source, roles, set, values, secrets, schedule_cron, peers, facts, runner, site } = inputs;
    let facts = facts.unwrap_or_else(|| Facts::gather(&root));
    let cx = Context { facts, secrets, runner, root, shared: Default::default() };
    // The kinds' early observations run while peers are looked up and the states compile:
    // a no-op run then waits for the slowest of them once, not after compiling.
    let (compiled, templates, data) = std::thread::scope(|s| {
        for early in early_observations(&set) {
            let cx = &cx;
            s.spawn(move || early(cx));
        }
        let (mut templates, data) = template_data(&cx, source, roles, &set, &values, schedule_cron, peers)?;
        let compiled = compile(set, source, &cx, &mut templates, &Data::new(data.to_value()))?;
        Ok::<_, anyhow::Error>((compiled, templates.names(), data))
    })?;
    Ok(Prepared { cx, nodes: compiled.nodes, fingerprints: compiled.fingerprints, data, templates, site })
}

/// The early observations of the kinds the roles use, each once.
fn early_observations(set: &RoleSet) -> Vec<fn(&Context)> {
    let mut out: Vec<fn(&Context)> = Vec::new();
    for spec in &set.states {
        if let Some(early) = crate::kinds::find(&spec.kind).ok().and_then(|k| k.early) {
            if !out.iter().any(|f| std::ptr::fn_addr_eq(*f, early)) {
                out.push(early);
            }
        }
    }
    out
}

/// The kinds that take part in leaving, and the parameter that turns them around: DNS records
/// are removed; a Patroni member hands its leadership over and stops; an etcd member leaves.
const LEAVING: &[(&str, &str)] =
    &[("dns_record", "absent"), ("patroni", "leave"), ("etcd_member", "leave"), ("swarm_member", "leave")];

/// The leaving states that may refuse (a swarm manager whose leaving would break the quorum):
/// `bootstrap decommission` plans them first and changes nothing when one refuses.
pub const MAY_REFUSE: &[&str] = &["swarm_member"];

/// The states that take the node out of the fleet (`bootstrap decommission`): its `dns_record`,
/// `patroni` and `etcd_member` states turned around (see `LEAVING`), newest first (so the
/// `_postgresql` record goes, then Patroni hands over and stops, then etcd is left once Patroni
/// stopped), then the schedule removed once all of them succeeded: a removal that fails (DNS
/// down) leaves the schedule, which retries it. A swarm member leaves before all of them
/// (demoted first, when a manager). Other services and the data stay.
pub fn decommission(mut inputs: Inputs<'_>) -> Result<Prepared> {
    let states = std::mem::take(&mut inputs.set.states);
    let mut leaving: Vec<StateSpec> = states
        .into_iter()
        .filter(|s| LEAVING.iter().any(|(k, _)| *k == s.kind))
        .map(|mut s| {
            let (_, how) = LEAVING.iter().find(|(k, _)| *k == s.kind).expect("filtered");
            s.params.insert((*how).into(), toml::Value::Boolean(true));
            s.requires.clear();
            s.notify.clear();
            s
        })
        .collect();
    leaving.reverse();
    // etcd is left only once Patroni here stopped: a leader must not lose its DCS first.
    let patroni: Vec<String> = leaving.iter().filter(|s| s.kind == "patroni").map(|s| s.id.clone()).collect();
    for s in leaving.iter_mut().filter(|s| s.kind == "etcd_member") {
        s.requires = patroni.clone();
    }
    // A swarm member leaves first: when it refuses, the node keeps its records and schedule.
    let swarm: Vec<String> = leaving.iter().filter(|s| s.kind == "swarm_member").map(|s| s.id.clone()).collect();
    for s in leaving.iter_mut().filter(|s| s.kind != "swarm_member") {
        s.requires.extend(swarm.iter().cloned());
    }
    let records: Vec<String> = leaving.iter().map(|s| s.id.clone()).collect();
    let mut params = toml::Table::new();
    params.insert("path".into(), toml::Value::String(CRON_FILE.into()));
    leaving.push(StateSpec {
        id: "schedule".into(),
        kind: "absent".into(),
        requires: records,
        notify: Vec::new(),
        when: None,
        for_each: None,
        params,
        origin: Origin { file: "decommission".into(), line: 0 },
        key_lines: Default::default(),
    });
    inputs.set.states = leaving;
    prepare(inputs)
}

/// The template data: facts, settings, roles, schedule, the node's private address,
/// discovered peers, firewall rules; and the templates they are rendered with.
fn template_data(
    cx: &Context,
    source: &dyn RoleSource,
    roles: Vec<String>,
    set: &RoleSet,
    values: &toml::Table,
    schedule_cron: String,
    peers: Peers,
) -> Result<(Templates, TemplateData)> {
    let known: BTreeMap<String, bool> = source
        .role_names()
        .into_iter()
        .map(|r| {
            let has = roles.contains(&r);
            (r, has)
        })
        .collect();
    let mut data = TemplateData {
        facts: cx.facts.clone(),
        settings: settings::template_data(&set.settings, values),
        node: NodeData {
            drained: crate::engine::layout::Layout::new(&cx.root).drained().exists(),
            ..NodeData::from(&cx.facts, values)
        },
        roles,
        schedule: Schedule { cron: schedule_cron },
        role: known,
        peers: serde_json::json!({}),
        firewall: Vec::new(),
    };
    let templates = Templates::new(&cx.secrets);
    // Peers are looked up before the states compile: templates (haproxy's pools) use them.
    let value = Data::new(data.to_value());
    let specs = set
        .discover
        .iter()
        .map(|(name, spec)| Ok((name.clone(), resolve_params(spec.clone(), &templates, &value)?)))
        .collect::<Result<_>>()
        .map_err(|e: anyhow::Error| e.context("`[discover]` in the roles"))?;
    data.peers = match peers {
        Peers::Discover { persist } => discovery::discover(cx, &specs, persist)?,
        Peers::Given(v) => v,
    };
    data.firewall = firewall_rules(&set.firewall, &templates, &Data::new(data.to_value()))?;
    Ok((templates, data))
}
