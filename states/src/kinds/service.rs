//! `service`: a systemd unit enabled or disabled at boot, running or stopped now.
//!
//! Observation is shared (see `systemd.rs`): every managed unit is described by one
//! `systemctl show` per run, so a converged role costs one child process however many
//! services it lists. Only the running system has a systemd to ask, so `--root` is refused.

use anyhow::{bail, Result};
use serde::Deserialize;

use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State, Thing};
use crate::engine::build::{params, Builder};
use crate::engine::runner::Cmd;
use crate::sys::systemd::{self, UnitStatus};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    name: String,
    enabled: Option<bool>,
    running: Option<bool>,
}

const UNIT_TYPES: &[&str] =
    &["service", "socket", "timer", "path", "target", "mount", "automount", "swap", "slice"];

pub fn build(t: toml::Table, b: &mut Builder) -> Result<Box<dyn State>> {
    let p: Params = params(t)?;
    let unit = unit_name(&p.name)?;
    if p.enabled.is_none() && p.running.is_none() {
        bail!("a service needs `enabled` and/or `running`");
    }
    systemd::register(b.cx, &unit);
    Ok(Box::new(ServiceState { unit, enabled: p.enabled, running: p.running }))
}

/// `haproxy` -> `haproxy.service`; a name with a unit type suffix is kept.
pub fn unit_name(name: &str) -> Result<String> {
    let ok = !name.is_empty()
        && !name.starts_with('-')
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || b":_.@-\\".contains(&c));
    if !ok {
        bail!("`name` `{name}` is not a systemd unit name");
    }
    let typed = name.rsplit_once('.').is_some_and(|(_, t)| UNIT_TYPES.contains(&t));
    Ok(if typed { name.to_string() } else { format!("{name}.service") })
}

struct ServiceState {
    unit: String,
    enabled: Option<bool>,
    running: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Enable,
    Disable,
    Start,
    Stop,
}

impl ServiceState {
    fn changes(&self, st: &UnitStatus) -> Result<Vec<Change>> {
        let u = &self.unit;
        match st.load_state.as_str() {
            "loaded" => {}
            "not-found" => bail!("unit {u} not found; is its package installed?"),
            "masked" => bail!("unit {u} is masked; unmask it (`systemctl unmask {u}`) to manage it here"),
            other => bail!("unit {u} could not be loaded (LoadState={other}); see `systemctl status {u}`"),
        }
        let mut out = Vec::new();
        let file = st.unit_file_state.as_str();
        match (self.enabled, file) {
            (None, _) | (Some(true), "enabled") => {}
            (Some(true), "disabled" | "enabled-runtime" | "linked" | "linked-runtime") => {
                out.push(Change::new(format!("enable (is {file})"), Op::Enable))
            }
            (Some(true), _) => bail!(
                "unit {u} can't be enabled: its unit file state is `{file}` (no [Install] section, or generated); drop `enabled`"
            ),
            (Some(false), "enabled" | "enabled-runtime" | "linked" | "linked-runtime") => {
                out.push(Change::new(format!("disable (is {file})"), Op::Disable))
            }
            (Some(false), _) => {}
        }
        // `activating` includes a unit waiting to restart itself: leave that to systemd.
        let active = matches!(st.active_state.as_str(), "active" | "activating" | "reloading" | "refreshing");
        let now = format!("{}/{}", st.active_state, st.sub_state);
        match self.running {
            Some(true) if !active => out.push(Change::new(format!("start (is {now})"), Op::Start)),
            Some(false) if active => out.push(Change::new(format!("stop (is {now})"), Op::Stop)),
            _ => {}
        }
        Ok(out)
    }
}

impl State for ServiceState {
    fn claims(&self) -> Vec<Claim> {
        vec![Claim::new(Thing::Unit(self.unit.clone()))]
    }

    fn service_unit(&self) -> Option<&str> {
        Some(&self.unit)
    }

    fn starts_unit(&self, plan: &Plan) -> bool {
        plan.ops::<Op>().any(|op| *op == Op::Start)
    }

    fn target(&self) -> String {
        self.unit.clone()
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        cx.require_live("services")?;
        let st = systemd::status(cx, &self.unit)?;
        Ok(Plan { changes: self.changes(&st)? })
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        let has = |op| plan.ops::<Op>().any(|o| *o == op);
        // `enable --now` / `disable --now`: one command when both halves are wanted.
        let verbs: Vec<&[&str]> = if has(Op::Enable) && has(Op::Start) {
            vec![&["enable", "--now"]]
        } else if has(Op::Disable) && has(Op::Stop) {
            vec![&["disable", "--now"]]
        } else {
            plan.ops::<Op>()
                .map(|op| -> &[&str] {
                    match op {
                        Op::Enable => &["enable"],
                        Op::Disable => &["disable"],
                        Op::Start => &["start"],
                        Op::Stop => &["stop"],
                    }
                })
                .collect()
        };
        let result = verbs
            .iter()
            .try_for_each(|v| cx.runner.check(&Cmd::new("systemctl").args(v.iter().copied()).arg(&self.unit)).map(drop));
        // Also after a failure: part of it may have happened.
        systemd::invalidate(cx);
        result
    }
}
