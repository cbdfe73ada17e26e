//! `packages`: a set of distribution packages installed and/or absent. Planning reads the
//! package database once per run (shared by every `packages` state); applying installs every
//! missing package in one transaction and removes (never purges) unwanted ones.

use anyhow::{bail, Result};
use serde::Deserialize;

use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State};
use crate::engine::build::{params, Builder};
use crate::sys::apt::Apt;
use crate::sys::package_manager::PackageManager;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    installed: Vec<String>,
    #[serde(default)]
    absent: Vec<String>,
}

pub struct PackagesState {
    installed: Vec<String>,
    absent: Vec<String>,
    pm: Box<dyn PackageManager>,
}

struct InstallOp(Vec<String>);
struct RemoveOp(Vec<String>);

pub fn build(t: toml::Table, b: &mut Builder) -> Result<Box<dyn State>> {
    Ok(Box::new(PackagesState::build(t, for_system(b.cx))?))
}

/// The dpkg database, read while the role compiles (on the running system).
pub fn early(cx: &Context) {
    if cx.direct() {
        let _ = Apt::status(cx);
    }
}

/// The backend for the node's distribution. Only Debian and its derivatives are supported.
fn for_system(_cx: &Context) -> Box<dyn PackageManager> {
    Box::new(Apt)
}

impl PackagesState {
    pub fn build(t: toml::Table, pm: Box<dyn PackageManager>) -> Result<Self> {
        let p: Params = params(t)?;
        if p.installed.is_empty() && p.absent.is_empty() {
            bail!("`packages` needs `installed` and/or `absent`");
        }
        let (installed, absent) = (dedup(p.installed), dedup(p.absent));
        for name in installed.iter().chain(&absent) {
            pm.check_name(name)?;
        }
        if let Some(both) = installed.iter().find(|n| absent.contains(n)) {
            bail!("`{both}` is both in `installed` and in `absent`");
        }
        Ok(PackagesState { installed, absent, pm })
    }
}

/// Role order kept (it is the order shown), repeats dropped.
fn dedup(names: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

impl State for PackagesState {
    /// Packages are not claimed: two roles may both want one installed.
    fn claims(&self) -> Vec<Claim> {
        Vec::new()
    }

    fn target(&self) -> String {
        let mut parts = Vec::new();
        if !self.installed.is_empty() {
            parts.push(self.installed.join(" "));
        }
        if !self.absent.is_empty() {
            parts.push(format!("absent: {}", self.absent.join(" ")));
        }
        parts.join("; ")
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        let mut plan = Plan::default();
        let have = self.pm.installed(cx, &self.installed)?;
        let missing: Vec<String> =
            self.installed.iter().zip(have).filter(|(_, ok)| !ok).map(|(n, _)| n.clone()).collect();
        if !missing.is_empty() {
            plan.push(Change::new(format!("install {}", missing.join(", ")), InstallOp(missing)));
        }
        let have = self.pm.installed(cx, &self.absent)?;
        let present: Vec<String> = self.absent.iter().zip(have).filter(|(_, ok)| *ok).map(|(n, _)| n.clone()).collect();
        if !present.is_empty() {
            plan.push(Change::new(format!("remove {}", present.join(", ")), RemoveOp(present)));
        }
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        cx.require_live("packages")?;
        for InstallOp(names) in plan.ops::<InstallOp>() {
            self.pm.install(cx, names)?;
        }
        for RemoveOp(names) in plan.ops::<RemoveOp>() {
            self.pm.remove(cx, names)?;
        }
        Ok(())
    }
}
