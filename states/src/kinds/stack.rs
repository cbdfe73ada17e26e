//! `stack`: a Docker stack deployed from a compose file (and an env file) that other states
//! write, with `docker stack deploy`, only when what runs differs from the files.
//!
//! ```toml
//! [[state]]
//! id = "stack"
//! type = "stack"
//! name = "web"                                       # the stack's name (its services: web_*)
//! compose = "/etc/bootstrap/stacks/web/docker-compose.yml"
//! env_file = "/etc/bootstrap/stacks/web/stack.env"   # KEY=VALUE lines, for ${KEY} in the file
//! resolve_image = "always"                           # docker's --resolve-image (never: no registry)
//! ```
//!
//! The swarm's leader deploys; other nodes only keep the files (a new leader takes over with
//! them). Each deployed service carries a label with the digest of the compose and env files
//! (a small compose file beside them adds it, so the operator's file stays as given): the plan
//! compares the stack's services (`GET /services`) with the services the file names and their
//! labels, so an unchanged file deploys nothing, a changed one deploys once, and a service
//! removed by hand is deployed again (`--prune` removes those the file no longer names). The
//! env file's values reach `docker stack deploy` in its environment, never its command line;
//! Docker itself keeps them in the service's spec (visible to whoever may use its socket).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use yaml_rust2::{Yaml, YamlLoader};

use crate::engine::atomic;
use crate::engine::beneath;
use crate::engine::build::{display, managed_path, params, Builder};
use crate::engine::content::sha256_hex;
use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State, Thing};
use crate::engine::runner::Cmd;
use crate::sys::docker_api;

/// Variables the `docker` command itself reads: never taken from a stack's env file.
const RESERVED: &[&str] = &["PATH", "HOME", "IFS", "SHELL", "TMPDIR"];

/// The label every deployed service carries: the digest of the files it was deployed from.
const LABEL: &str = "io.bootstrap.stack-digest";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    name: String,
    compose: PathBuf,
    #[serde(default)]
    env_file: Option<PathBuf>,
    #[serde(default = "default_resolve")]
    resolve_image: String,
}

fn default_resolve() -> String {
    "always".into()
}

pub fn build(t: toml::Table, b: &mut Builder) -> Result<Box<dyn State>> {
    let p: Params = params(t)?;
    docker_api::register(b.cx);
    if p.name.is_empty() || p.name.len() > 40 || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("`name` `{}` is not a stack name (letters, digits, - and _, at most 40)", p.name);
    }
    if !["always", "changed", "never"].contains(&p.resolve_image.as_str()) {
        bail!("`resolve_image` `{}` must be always, changed or never", p.resolve_image);
    }
    let compose = managed_path(&p.compose)?;
    let labels = compose.with_file_name(format!("{}.bootstrap-labels.json", p.name));
    Ok(Box::new(Stack {
        name: p.name,
        compose,
        env_file: p.env_file.as_deref().map(managed_path).transpose()?,
        labels,
        resolve_image: p.resolve_image,
    }))
}

struct Stack {
    name: String,
    compose: PathBuf,
    env_file: Option<PathBuf>,
    /// The compose file bootstrap adds beside the operator's (the digest label).
    labels: PathBuf,
    resolve_image: String,
}

/// What the files say.
struct Desired {
    version: String,
    services: Vec<String>,
    digest: String,
    env: Vec<(String, String)>,
}

struct Deploy(Desired);

/// The compose file's `version` and service names; an error says what is wrong and where.
fn read_compose(text: &str, shown: &str) -> Result<(String, Vec<String>)> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| anyhow!("{shown} is not valid YAML: {e}"))?;
    let [doc] = &docs[..] else { bail!("{shown}: one YAML document expected, found {}", docs.len()) };
    let version = match &doc["version"] {
        Yaml::String(s) => s.clone(),
        Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::BadValue => bail!("{shown}: no `version` (docker stack deploy needs \"3\" or later, e.g. version: \"3.8\")"),
        _ => bail!("{shown}: `version` must be a string like \"3.8\""),
    };
    if version.split('.').next().and_then(|m| m.parse::<u32>().ok()).is_none_or(|m| m < 3) {
        bail!("{shown}: `version: {version}`: docker stack deploy needs a compose file of version 3 or later");
    }
    let Yaml::Hash(services) = &doc["services"] else {
        bail!("{shown}: no `services` mapping: a stack needs at least one service");
    };
    let mut names = Vec::new();
    for (k, v) in services {
        let Yaml::String(name) = k else { bail!("{shown}: a service name must be a string") };
        if !matches!(v, Yaml::Hash(_)) {
            bail!("{shown}: service `{name}` must be a mapping (image, deploy, …)");
        }
        names.push(name.clone());
    }
    if names.is_empty() {
        bail!("{shown}: `services` is empty: a stack needs at least one service");
    }
    Ok((version, names))
}

/// `KEY=VALUE` lines (a value may be quoted as sh would); `#` comments and blank lines.
fn read_env(text: &str, shown: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || anyhow!("{shown} line {}: not a KEY=VALUE line", i + 1);
        let (k, v) = line.split_once('=').ok_or_else(bad)?;
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad());
        }
        if RESERVED.contains(&k) || k.starts_with("DOCKER_") || k.starts_with("LD_") {
            bail!("{shown} line {}: `{k}` would change how `docker` itself runs: choose another name", i + 1);
        }
        // The value is never quoted in a message: it may be a secret.
        let words = shell_words::split(v).map_err(|_| bad())?;
        let value = match &words[..] {
            [] => String::new(),
            [one] => one.clone(),
            _ => return Err(bad()),
        };
        out.push((k.to_string(), value));
    }
    Ok(out)
}

impl Stack {
    fn desired(&self, cx: &Context) -> Result<Option<Desired>> {
        let shown = display(&self.compose);
        let text = match std::fs::read_to_string(cx.path(&self.compose)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {shown}")),
        };
        let (version, services) = read_compose(&text, &shown)?;
        let mut hashed = text.into_bytes();
        let mut env = Vec::new();
        if let Some(f) = &self.env_file {
            let bytes = match std::fs::read(cx.path(f)) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("{} is not there to deploy with", display(f)),
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", display(f))),
            };
            env = read_env(&String::from_utf8_lossy(&bytes), &display(f))?;
            hashed.push(0);
            hashed.extend_from_slice(&bytes);
        }
        let digest = sha256_hex(&hashed)[..16].to_string();
        Ok(Some(Desired { version, services, digest, env }))
    }

    /// Whether this node deploys: the swarm's leader does.
    fn is_leader(&self, cx: &Context) -> Result<bool> {
        let Some(info) = docker_api::swarm_info_if_running(cx)? else { return Ok(false) };
        if info.state != "active" || !info.manager {
            return Ok(false);
        }
        Ok(docker_api::nodes_observed(cx)?.iter().any(|n| n.id == info.node_id && n.leader))
    }

    /// The stack's services as deployed: name → digest label.
    fn deployed(&self, cx: &Context) -> Result<BTreeMap<String, String>> {
        let filter = json!({ "label": [format!("com.docker.stack.namespace={}", self.name)] }).to_string();
        let path = format!("/services?filters={}", url::form_urlencoded::byte_serialize(filter.as_bytes()).collect::<String>());
        let list = docker_api::ok(&docker_api::socket(cx), "GET", &path, None)?;
        Ok(list
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let name = s["Spec"]["Name"].as_str().unwrap_or("").to_string();
                let label = s["Spec"]["Labels"][LABEL].as_str().unwrap_or("").to_string();
                (name, label)
            })
            .collect())
    }

    /// What differs between the files and the running services, in words; empty: nothing.
    fn differences(&self, d: &Desired, have: &BTreeMap<String, String>) -> Vec<String> {
        let mut out = Vec::new();
        for svc in &d.services {
            let full = format!("{}_{svc}", self.name);
            match have.get(&full) {
                None => out.push(format!("{full} is not running")),
                Some(l) if *l != d.digest => out.push(format!("{full} runs an older file")),
                Some(_) => {}
            }
        }
        for name in have.keys() {
            if !d.services.iter().any(|s| format!("{}_{s}", self.name) == *name) {
                out.push(format!("{name} is no longer in the file (removed)"));
            }
        }
        out
    }

    fn labels_file(&self, d: &Desired) -> Vec<u8> {
        let services: serde_json::Map<String, Value> =
            d.services.iter().map(|s| (s.clone(), json!({ "deploy": { "labels": { LABEL: d.digest } } }))).collect();
        let doc = json!({ "version": d.version, "services": services });
        format!(
            "# Written by bootstrap (stack {}): the digest of the files each service was deployed from.\n{doc}\n",
            self.name
        )
        .into_bytes()
    }
}

impl State for Stack {
    fn claims(&self) -> Vec<Claim> {
        vec![Claim::path(&self.labels), Claim::new(Thing::Stack(self.name.clone()))]
    }

    fn target(&self) -> String {
        format!("{} from {}", self.name, display(&self.compose))
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        let mut plan = Plan::default();
        let desired = self.desired(cx)?;
        if !cx.is_live() || !self.is_leader(cx)? {
            return Ok(plan);
        }
        let Some(d) = desired else {
            bail!("{} is not there to deploy", display(&self.compose));
        };
        let diff = self.differences(&d, &self.deployed(cx)?);
        if !diff.is_empty() {
            plan.push(Change::new(format!("deploy stack {} ({})", self.name, diff.join("; ")), Deploy(d)));
        }
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        cx.require_live("docker stack deploy")?;
        for Deploy(d) in plan.ops::<Deploy>() {
            // Written through its directory, reached without following a link (`beneath`);
            // docker gets where that directory is, links resolved.
            let (dir, name) = beneath::open_parent(cx, &self.labels, Some(0o755), None)?;
            atomic::write_plain(&dir.join(&name), &self.labels_file(d), 0o644)?;
            let labels = cx.path(dir.resolved()).join(&name);
            let mut cmd = Cmd::new("docker")
                .args(["stack", "deploy", "--prune", "--resolve-image", self.resolve_image.as_str(), "--compose-file"])
                .arg(cx.path(&self.compose).to_string_lossy())
                .arg("--compose-file")
                .arg(labels.to_string_lossy())
                .arg(self.name.as_str())
                .timeout(std::time::Duration::from_secs(300));
            for (k, v) in &d.env {
                cmd = cmd.env(k.as_str(), v.as_str());
            }
            cx.runner.check(&cmd)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compose_file_names_its_services_or_says_what_is_wrong() {
        let (v, s) = read_compose("version: \"3.8\"\nservices:\n  web:\n    image: x\n  api:\n    image: y\n", "f").unwrap();
        assert_eq!((v.as_str(), s), ("3.8", vec!["web".to_string(), "api".into()]));
        let e = |t: &str| read_compose(t, "f.yml").unwrap_err().to_string();
        assert!(e("services:\n  web: {}\n").contains("no `version`"));
        assert!(e("version: \"2.4\"\nservices:\n  web: {}\n").contains("version 3 or later"));
        assert!(e("version: \"3\"\n").contains("no `services`"));
        assert!(e("version: \"3\"\nservices:\n  web: [1]\n").contains("service `web` must be a mapping"));
        assert!(e("version: \"3\"\nservices: {web: {image: x}\n").contains("not valid YAML"));
    }

    #[test]
    fn env_lines_are_read_as_sh_would_and_never_quoted_in_errors() {
        let env = read_env("# c\nA=1\nB=\"x \\\"y\\\" \\$z\"\n\nC=\n", "e").unwrap();
        assert_eq!(env, [("A".into(), "1".into()), ("B".into(), "x \"y\" $z".into()), ("C".into(), String::new())]);
        let err = read_env("PW=\"canary-secret\n", "e").unwrap_err().to_string();
        assert!(err.contains("line 1") && !err.contains("canary"), "{err}");
        assert!(read_env("not a line\n", "e").is_err());
        for key in ["PATH", "DOCKER_HOST", "LD_PRELOAD"] {
            assert!(read_env(&format!("{key}=x\n"), "e").unwrap_err().to_string().contains("how `docker` itself runs"));
        }
    }
}
