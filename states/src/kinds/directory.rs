//! `directory`: exists, with owner, group and mode; missing parents are created 0755.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State};
use crate::engine::build::{display, managed_path, params, Builder};
use crate::engine::beneath;
use crate::files::ownership::{apply_meta_owned, MetaOp, Mode, Ownership};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    path: PathBuf,
    owner: Option<String>,
    group: Option<String>,
    mode: Option<Mode>,
}

pub struct DirectoryState {
    path: PathBuf,
    own: Ownership,
}

struct CreateOp;

pub fn build(t: toml::Table, _b: &mut Builder) -> Result<Box<dyn State>> {
    Ok(Box::new(DirectoryState::build(t)?))
}

impl DirectoryState {
    pub fn build(t: toml::Table) -> Result<Self> {
        let p: Params = params(t)?;
        let own = Ownership { owner: p.owner, group: p.group, mode: p.mode };
        Ok(DirectoryState { path: managed_path(&p.path)?, own })
    }
}

impl State for DirectoryState {
    fn claims(&self) -> Vec<Claim> {
        vec![Claim::path(&self.path)]
    }

    fn target(&self) -> String {
        display(&self.path)
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        let mut plan = Plan::default();
        // Where `apply` reaches it: without following a link on the way.
        let found = beneath::find_parent(cx, &self.path, self.own.owner_uid())?;
        match found.as_ref().map(|(dir, name)| fs::symlink_metadata(dir.join(name))) {
            Some(Ok(m)) if m.is_dir() => plan.changes.extend(self.own.plan(&m)),
            Some(Ok(_)) => bail!("{} exists and is not a directory", self.target()),
            Some(Err(e)) if e.kind() != ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot inspect {}", self.target()))
            }
            _ => {
                let mode = self.own.mode.unwrap_or(Mode(0o755));
                plan.push(Change::new(format!("create directory, mode {mode}"), CreateOp));
            }
        }
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        if plan.ops::<CreateOp>().next().is_none() {
            return apply_meta_owned(cx, &self.path, self.own.owner_uid(), plan.ops::<MetaOp>());
        }
        // Missing parents 0755, reached without following a link (`beneath`).
        let (parent, name) = beneath::open_parent(cx, &self.path, Some(0o755), self.own.owner_uid())?;
        let mode = self.own.mode.unwrap_or(Mode(0o755));
        fs::DirBuilder::new()
            .mode(mode.0)
            .create(parent.join(&name))
            .with_context(|| format!("cannot create {}", self.target()))?;
        // The umask may have narrowed the mode: set owner and mode exactly.
        apply_meta_owned(cx, &self.path, self.own.owner_uid(), self.own.with_mode(mode).all_ops().iter())
    }
}
