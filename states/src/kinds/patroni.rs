//! `patroni`: this node's Patroni member runs PostgreSQL, and the cluster's dynamic
//! configuration (what Patroni keeps in etcd and applies on every member: timings, synchronous
//! mode, PostgreSQL parameters, pg_hba) is as stated. Once Patroni owns PostgreSQL, this is how
//! its settings change: never by editing files Patroni rewrites. The desired values are a JSON
//! template; only the keys it names are compared and patched, so what an operator set with
//! `patronictl edit-config` is left alone unless the role names it too.
//!
//! A member that is not running yet (just started, cloning from the leader, restarting) is a
//! change: applying it waits until Patroni reports it running, so the states after this one
//! (roles and databases on the leader) find PostgreSQL up.

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::engine::build::{params, Builder};
use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State};
use crate::sys::patroni;

/// How long a member may take to run after its start: a replica clones the leader first.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// This node's REST API, `http://ADDRESS:8008`.
    api: String,
    /// A template rendering the desired dynamic configuration as a JSON object.
    template: String,
    /// The REST API's user and the secret holding its password (changes need them).
    user: String,
    password_secret: String,
    /// Leave instead (`bootstrap decommission`): hand the leadership over if this member has
    /// it, then stop Patroni (and with it PostgreSQL) for good.
    #[serde(default)]
    leave: bool,
    #[serde(default = "default_unit")]
    unit: String,
}

fn default_unit() -> String {
    "patroni.service".into()
}

pub fn build(t: toml::Table, b: &mut Builder) -> Result<Box<dyn State>> {
    let p: Params = params(t)?;
    if !p.api.starts_with("http://") {
        bail!("`api`: `{}` is not an http:// URL", p.api);
    }
    let content = b.render(&p.template)?;
    if content.secret {
        bail!("`template`: the dynamic configuration is stored in etcd, readable on the private network: no secret in it");
    }
    let desired: Value = serde_json::from_slice(&content.bytes)
        .map_err(|e| anyhow!("`template` `{}` does not render valid JSON: {e}", p.template))?;
    let Value::Object(desired) = desired else { bail!("`template` `{}` must render a JSON object", p.template) };
    if b.cx.secrets.get(&p.password_secret).is_none() {
        bail!("`password_secret`: secret `{}` is not set", p.password_secret);
    }
    crate::sys::systemd::register(b.cx, &p.unit);
    Ok(Box::new(PatroniConfig {
        api: p.api,
        desired,
        user: p.user,
        secret: p.password_secret,
        leave: p.leave,
        unit: p.unit,
        name: b.cx.facts.hostname.clone(),
    }))
}

struct PatroniConfig {
    api: String,
    desired: Map<String, Value>,
    user: String,
    secret: String,
    leave: bool,
    unit: String,
    /// This member's name (Patroni's `name`: the host name).
    name: String,
}

enum Op {
    /// The keys to send: every desired key whose value differs from what is stored.
    Patch(Value),
    /// Wait until the member runs, then patch what differs.
    Settle,
    /// Switch over first when this member leads, then stop Patroni for good.
    Leave { switchover: bool },
}

/// `desired` keys that differ from `have`, recursing into objects; the dotted names changed.
fn differences(desired: &Map<String, Value>, have: &Value, prefix: &str, names: &mut Vec<String>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, want) in desired {
        let name = format!("{prefix}{k}");
        let got = &have[k];
        match want {
            Value::Object(inner) if got.is_object() => {
                let sub = differences(inner, got, &format!("{name}."), names);
                if !sub.is_empty() {
                    out.insert(k.clone(), Value::Object(sub));
                }
            }
            _ if want == got => {}
            _ => {
                names.push(match (want, got) {
                    (Value::Array(w), Value::Array(g)) => format!("{name} ({} entries -> {})", g.len(), w.len()),
                    (_, Value::Null) => format!("{name} = {}", short(want)),
                    _ => format!("{name} {} -> {}", short(got), short(want)),
                });
                out.insert(k.clone(), want.clone());
            }
        }
    }
    out
}

impl PatroniConfig {
    /// What differs from the stored dynamic configuration: the names changed and the patch.
    fn patch(&self, c: &reqwest::blocking::Client) -> Result<Option<(Vec<String>, Value)>> {
        let have = patroni::config(c, &self.api).map_err(|e| anyhow!("reading the dynamic configuration: {e:#}"))?;
        let mut names = Vec::new();
        let patch = differences(&self.desired, &have, "", &mut names);
        Ok((!patch.is_empty()).then_some((names, Value::Object(patch))))
    }
}

impl PatroniConfig {
    /// `patch`, once the dynamic configuration exists (bounded by `SETTLE`).
    fn patch_when_initialised(&self, c: &reqwest::blocking::Client) -> Result<Option<(Vec<String>, Value)>> {
        let t = std::time::Instant::now();
        loop {
            match self.patch(c) {
                Err(e) if t.elapsed() < SETTLE => {
                    tracing::debug!("waiting for the dynamic configuration: {e:#}");
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!("{}…", &s[..s.char_indices().nth(39).map_or(s.len(), |(i, _)| i)])
    } else {
        s
    }
}

impl State for PatroniConfig {
    /// The configuration is the cluster's, not this node's: every member states the same.
    fn claims(&self) -> Vec<Claim> {
        Vec::new()
    }

    fn target(&self) -> String {
        format!("{}/config", self.api)
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        let c = patroni::client()?;
        let mut plan = Plan::default();
        if self.leave {
            let unit = crate::sys::systemd::status(cx, &self.unit)?;
            if unit.active_state == "active" || unit.unit_file_state == "enabled" {
                let members = patroni::cluster(&c, &self.api).map_err(|e| {
                    anyhow!("Patroni runs here but its cluster view can't be read ({e:#}): not leaving without knowing whether this node leads")
                })?;
                let leads = members.iter().any(|m| m.name == self.name && m.role == "leader");
                let other = members.iter().any(|m| m.name != self.name && (m.state == "running" || m.state == "streaming"));
                let switchover = leads && other;
                let what = if switchover {
                    "hand the leadership to a replica (switchover), then stop Patroni and PostgreSQL here"
                } else {
                    "stop Patroni and PostgreSQL here"
                };
                plan.push(Change::new(what, Op::Leave { switchover }));
            }
            return Ok(plan);
        }
        // Running: PostgreSQL answers on its socket (the run's shared observation, which the
        // pg states use too). Patroni's own /patroni endpoint queries PostgreSQL each time.
        if let Err(e) = crate::sys::psql::snapshot(cx) {
            plan.push(Change::new(format!("wait until Patroni runs PostgreSQL here (now: {e:#})"), Op::Settle));
            return Ok(plan);
        }
        // Right after Patroni took a data directory over, it runs PostgreSQL before the cluster
        // is initialised in etcd: `/config` answers 502 until then.
        match self.patch(&c) {
            Ok(Some((names, patch))) => plan.push(Change::new(format!("set {}", names.join(", ")), Op::Patch(patch))),
            Ok(None) => {}
            Err(e) => plan.push(Change::new(format!("wait until the cluster is initialised ({e:#})"), Op::Settle)),
        }
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        let password = cx.secrets.get(&self.secret).ok_or_else(|| anyhow!("secret `{}` is not set", self.secret))?;
        let c = patroni::client()?;
        for op in plan.ops::<Op>() {
            let patch = match op {
                Op::Leave { switchover } => {
                    if *switchover {
                        patroni::switchover(&self.api, &self.name, (&self.user, password))?;
                        patroni::wait_leader_elsewhere(&c, &self.api, &self.name, SETTLE)?;
                    }
                    cx.runner.check(&crate::engine::runner::Cmd::new("systemctl").args(["disable", "--now", self.unit.as_str()]))?;
                    crate::sys::systemd::invalidate(cx);
                    None
                }
                Op::Patch(p) => Some(p.clone()),
                Op::Settle => {
                    patroni::wait_running(&c, &self.api, SETTLE)?;
                    cx.shared.invalidate::<crate::sys::psql::Snapshot>();
                    self.patch_when_initialised(&c)?.map(|(_, p)| p)
                }
            };
            if let Some(p) = patch {
                patroni::patch_config(&c, &self.api, &p, (&self.user, password))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_named_keys_that_differ_are_patched() {
        let want = json!({"ttl": 15, "postgresql": {"use_pg_rewind": true, "pg_hba": ["a", "b"]}});
        let have = json!({"ttl": 30, "loop_wait": 10, "postgresql": {"use_pg_rewind": true, "pg_hba": ["a"]}});
        let mut names = Vec::new();
        let d = differences(want.as_object().unwrap(), &have, "", &mut names);
        assert_eq!(Value::Object(d), json!({"ttl": 15, "postgresql": {"pg_hba": ["a", "b"]}}));
        assert_eq!(names, ["postgresql.pg_hba (1 entries -> 2)", "ttl 30 -> 15"]);
        let mut none = Vec::new();
        assert!(differences(want.as_object().unwrap(), &want, "", &mut none).is_empty());
    }
}
