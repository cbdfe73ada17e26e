//! `group`: a local group for a service (a system group by default), or its absence.
//! Observed from `/etc/group` (read once per run); changed with `groupadd`/`groupmod`/`groupdel`.

use anyhow::{bail, Result};
use serde::Deserialize;

use crate::sys::accounts::{check_id, check_name, shadow_cmd, Accounts};
use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State, Thing};
use crate::engine::build::{params, Builder};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    name: String,
    gid: Option<u32>,
    /// A system account (id from the system range): chosen at creation only, never changed.
    #[serde(default = "yes")]
    system: bool,
    #[serde(default)]
    absent: bool,
}

fn yes() -> bool {
    true
}

pub struct GroupState {
    name: String,
    gid: Option<u32>,
    system: bool,
    absent: bool,
}

enum GroupOp {
    Create,
    SetGid(u32),
    Delete,
}

pub fn build(t: toml::Table, _b: &mut Builder) -> Result<Box<dyn State>> {
    Ok(Box::new(GroupState::build(t)?))
}

impl GroupState {
    pub fn build(t: toml::Table) -> Result<Self> {
        let p: Params = params(t)?;
        check_name("group", &p.name)?;
        if let Some(gid) = p.gid {
            check_id("gid", gid)?;
            if p.absent {
                bail!("`gid` makes no sense with `absent = true`");
            }
        }
        Ok(GroupState { name: p.name, gid: p.gid, system: p.system, absent: p.absent })
    }
}

impl State for GroupState {
    fn claims(&self) -> Vec<Claim> {
        vec![Claim::new(Thing::Group(self.name.clone()))]
    }

    fn target(&self) -> String {
        self.name.clone()
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        let a = Accounts::get(cx)?;
        let mut plan = Plan::default();
        let have = a.group(&self.name);
        if self.absent {
            if let Some(g) = have {
                plan.push(Change::new(format!("delete group {} (gid {})", g.name, g.gid), GroupOp::Delete));
            }
            return Ok(plan);
        }
        // A gid taken by another group would make groupadd/groupmod fail; say so while planning.
        if let Some(other) = self.gid.and_then(|gid| a.group_by_gid(gid)).filter(|g| g.name != self.name) {
            bail!("gid {} is already used by group `{}`", other.gid, other.name);
        }
        match have {
            None => {
                let kind = if self.system { "system group" } else { "group" };
                let gid = self.gid.map_or("gid chosen by groupadd".into(), |g| format!("gid {g}"));
                plan.push(Change::new(format!("create {kind} {} ({gid})", self.name), GroupOp::Create));
            }
            // An existing group's gid changes only when the role names one: files keep their
            // numeric owner, so this must never happen by accident.
            Some(g) => match self.gid {
                Some(want) if want != g.gid => plan.push(Change::new(
                    format!("gid {} -> {want} (set explicitly; files owned by gid {} keep that gid)", g.gid, g.gid),
                    GroupOp::SetGid(want),
                )),
                _ => {}
            },
        }
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        let result = plan.ops::<GroupOp>().try_for_each(|op| {
            let cmd = match op {
                GroupOp::Create => {
                    let mut c = shadow_cmd(cx, "groupadd");
                    if self.system {
                        c = c.arg("--system");
                    }
                    if let Some(gid) = self.gid {
                        c = c.args(["--gid".to_string(), gid.to_string()]);
                    }
                    c
                }
                GroupOp::SetGid(gid) => shadow_cmd(cx, "groupmod").args(["--gid".to_string(), gid.to_string()]),
                GroupOp::Delete => shadow_cmd(cx, "groupdel"),
            };
            cx.runner.check(&cmd.arg(&self.name)).map(drop)
        });
        Accounts::invalidate(cx);
        result
    }
}
