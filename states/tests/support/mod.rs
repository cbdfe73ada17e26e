//! Shared helpers for the states tests: a context on a temp root, roles from TOML text.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use states::engine::facts::Facts;
use states::engine::notify::{Notification, Notifier};
use states::engine::report::{Mode, RunReport};
use states::engine::run::{self as engine, Node};
use states::engine::runner::SystemRunner;
use states::engine::secrets::Secrets;
use states::role::template::{Data, Templates};
use states::role::{self, DirSource};
use states::Context;

pub fn cx(root: &Path) -> Context {
    cx_with_secrets(root, &[])
}

pub fn cx_with_secrets(root: &Path, secrets: &[(&str, &str)]) -> Context {
    let values: BTreeMap<String, String> = secrets.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Context {
        root: root.to_path_buf(),
        facts: Facts { hostname: "node1".into(), ..Default::default() },
        secrets: Secrets::new(values),
        runner: Box::new(SystemRunner),
        shared: Default::default(),
    }
}

/// Compile a role given as TOML text (plus templates) into nodes.
pub fn nodes(cx: &Context, role: &str, templates: &[(&str, &str)]) -> anyhow::Result<Vec<Node>> {
    nodes_as(cx, role, templates, serde_json::Value::Null)
}

/// As `nodes`, with this template data `node` (what the node is in the fleet).
pub fn nodes_as(
    cx: &Context,
    role: &str,
    templates: &[(&str, &str)],
    node: serde_json::Value,
) -> anyhow::Result<Vec<Node>> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("test.toml"), role).unwrap();
    std::fs::create_dir(dir.path().join("templates")).unwrap();
    for (name, text) in templates {
        std::fs::write(dir.path().join("templates").join(name), text).unwrap();
    }
    let source = DirSource(dir.path().to_path_buf());
    let set = role::load(&source, &["test".to_string()])?;
    let data =
        serde_json::json!({ "facts": cx.facts, "settings": { "greeting": "hello", "domain": null }, "node": node });
    let mut t = Templates::new(&cx.secrets);
    Ok(role::compile(set, &source, cx, &mut t, &Data::new(data))?.nodes)
}

/// Records notifications; fails them while `fail` is set.
#[derive(Default)]
pub struct Recorder {
    pub seen: std::cell::RefCell<Vec<String>>,
    pub fail: std::cell::Cell<bool>,
}

impl Notifier for Recorder {
    fn notify(&self, _: &Context, n: &Notification) -> anyhow::Result<()> {
        if self.fail.get() {
            anyhow::bail!("unit {} not found", n.service);
        }
        self.seen.borrow_mut().push(n.to_string());
        Ok(())
    }
}

pub fn run(cx: &Context, nodes: &[Node], mode: Mode, notifier: &dyn Notifier) -> RunReport {
    engine::run(cx, nodes, mode, notifier, &mut |_| {}).unwrap()
}

pub fn apply(cx: &Context, nodes: &[Node]) -> RunReport {
    run(cx, nodes, Mode::Apply, &Recorder::default())
}

pub fn check(cx: &Context, nodes: &[Node]) -> RunReport {
    run(cx, nodes, Mode::Check, &Recorder::default())
}

pub fn status_of(r: &RunReport, id: &str) -> states::engine::report::Status {
    r.states.iter().find(|s| s.id == id).unwrap_or_else(|| panic!("no state {id}")).status
}

/// The shipped roles (`roles/` of the repository), as a node would load them.
pub fn shipped_source() -> DirSource {
    DirSource(Path::new(env!("CARGO_MANIFEST_DIR")).join("../roles"))
}

/// What a node with `roles` would run: the shipped roles compiled by the pipeline with these
/// site settings (checked and defaulted as at install), secrets, facts and peers, on `cx`'s
/// root with `cx`'s runner (taken; `cx` is left with the system runner).
pub fn shipped(
    cx: &mut Context,
    roles: &[&str],
    site: &str,
    peers: serde_json::Value,
) -> anyhow::Result<states::pipeline::Prepared> {
    compile_roles(&shipped_source(), cx, roles, site, peers)
}

/// `shipped`, with the roles of `source`.
pub fn compile_roles(
    source: &DirSource,
    cx: &mut Context,
    roles: &[&str],
    site: &str,
    peers: serde_json::Value,
) -> anyhow::Result<states::pipeline::Prepared> {
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    let set = role::load(source, &roles)?;
    let site: toml::Table = toml::from_str(site)?;
    let known = role::known_settings(source, &set)?;
    let resolved = states::role::settings::resolve(&set.settings, &known, &site, "site")?;
    anyhow::ensure!(resolved.missing.is_empty(), "missing settings: {:?}", resolved.missing);
    let mut inputs = states::pipeline::Inputs::new(cx.root.clone(), source, roles, set);
    inputs.values = resolved.values;
    inputs.secrets = cx.secrets.clone();
    inputs.schedule_cron = "7-59/15 * * * *".into();
    inputs.peers = states::pipeline::Peers::Given(peers);
    inputs.facts = Some(cx.facts.clone());
    inputs.runner = std::mem::replace(&mut cx.runner, Box::new(SystemRunner));
    states::pipeline::prepare(inputs)
}
