//! The site's `bootstrap_version`: the node's binary as one more desired state. `--check` shows
//! the update (after verifying the release's signed manifest); a run carries it out, and the
//! next run is made by the new binary. Not a kind of the roles' table: only this binary, with
//! its built-in release key, can add it.

use std::cmp::Ordering;

use anyhow::{anyhow, Result};
use states::engine::context::Context;
use states::engine::contract::{Change, Claim, Plan, State};
use states::engine::layout::{Layout, INSTALLED, PREVIOUS};
use states::engine::run::Node;
use states::sys::http::shown;

use super::release::{self, Manifest};
use super::{installed_version, setting, swap};

pub const ID: &str = "bootstrap-version";

struct Pinned {
    version: String,
    url: Option<String>,
}

/// The state for the site's pin, when there is one.
pub fn node(values: &toml::Table) -> Option<Node> {
    let version = setting(values, "bootstrap_version")?;
    Some(Node {
        id: ID.into(),
        kind: "binary",
        state: Box::new(Pinned { version, url: setting(values, "release_url") }),
        requires: Vec::new(),
        notify: Vec::new(),
    })
}

impl State for Pinned {
    fn target(&self) -> String {
        format!("{INSTALLED} {}", self.version)
    }

    fn claims(&self) -> Vec<Claim> {
        vec![Claim::path(INSTALLED), Claim::path(PREVIOUS)]
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        let current = installed_version(&Layout::new(&cx.root))?;
        let mut plan = Plan::default();
        let order = release::compare(&self.version, &current)?;
        if order == Ordering::Equal {
            return Ok(plan);
        }
        let url = self.url.as_deref().ok_or_else(|| {
            anyhow!("the site pins bootstrap_version = {}; set `release_url` so the node can fetch it", self.version)
        })?;
        // Verified now, so a dry run shows only an update a run could carry out.
        let m = release::manifest(url, Some(&self.version))?;
        let verb = if order == Ordering::Greater { "update" } else { "roll back" };
        plan.push(Change::new(format!("{verb} bootstrap {current} → {} from {}", m.version, shown(url)), m));
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        let url = self.url.as_deref().expect("planned with a URL");
        for m in plan.ops::<Manifest>() {
            let bytes = release::binary(url, m)?;
            swap::install(&Layout::new(&cx.root), &bytes, &m.version)?;
        }
        Ok(())
    }
}
