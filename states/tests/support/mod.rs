//! Shared helpers for the states tests: a context on a temp root, roles from TOML text.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use states::engine::{self, Node};
use states::facts::Facts;
use states::notify::{Notification, Notifier};
use states::report::{Mode, RunReport};
use states::role::{self, DirSource};
use states::runner::SystemRunner;
use states::secrets::Secrets;
use states::template::Templates;
use states::Context;

pub fn cx(root: &Path) -> Context {
    cx_with_secrets(root, &[])
}

pub fn cx_with_secrets(root: &Path, secrets: &[(&str, &str)]) -> Context {
    let values: BTreeMap<String, String> =
        secrets.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Context {
        root: root.to_path_buf(),
        facts: Facts { hostname: "node1".into(), ..Default::default() },
        settings: serde_json::json!({ "greeting": "hello", "domain": null }),
        secrets: Secrets::new(values),
        runner: Box::new(SystemRunner),
        shared: Default::default(),
    }
}

/// Compile a role given as TOML text (plus templates) into nodes.
pub fn nodes(cx: &Context, role: &str, templates: &[(&str, &str)]) -> anyhow::Result<Vec<Node>> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("test.toml"), role).unwrap();
    std::fs::create_dir(dir.path().join("templates")).unwrap();
    for (name, text) in templates {
        std::fs::write(dir.path().join("templates").join(name), text).unwrap();
    }
    let source = DirSource(dir.path().to_path_buf());
    let set = role::load(&source, &["test".to_string()])?;
    let data = serde_json::json!({ "facts": cx.facts, "settings": cx.settings });
    let mut t = Templates::new(&cx.secrets);
    role::compile(set, &source, cx, &mut t, &data)
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

pub fn status_of(r: &RunReport, id: &str) -> states::report::Status {
    r.states.iter().find(|s| s.id == id).unwrap_or_else(|| panic!("no state {id}")).status
}
