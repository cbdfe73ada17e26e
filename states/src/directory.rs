//! `directory`: exists, with owner, group and mode; missing parents are created 0755.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use crate::context::Context;
use crate::contract::{Change, Plan, State};
use crate::module::{display, managed_path, params};
use crate::ownership::{apply_meta, MetaOp, Mode, Ownership};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    path: PathBuf,
    owner: Option<String>,
    group: Option<String>,
    mode: Option<Mode>,
}

pub struct DirectoryState {
    id: String,
    path: PathBuf,
    own: Ownership,
}

struct CreateOp;

impl DirectoryState {
    pub fn build(id: String, t: toml::Table) -> Result<Self> {
        let p: Params = params(t)?;
        let own = Ownership { owner: p.owner, group: p.group, mode: p.mode };
        Ok(DirectoryState { id, path: managed_path(&p.path)?, own })
    }
}

impl State for DirectoryState {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &'static str {
        "directory"
    }

    fn target(&self) -> String {
        display(&self.path)
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        let mut plan = Plan::default();
        match fs::symlink_metadata(cx.path(&self.path)) {
            Ok(m) if m.is_dir() => plan.changes.extend(self.own.plan(&m)),
            Ok(_) => bail!("{} exists and is not a directory", self.target()),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let mode = self.own.mode.unwrap_or(Mode(0o755));
                plan.push(Change::new(format!("create directory, mode {mode}"), CreateOp));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", self.target())),
        }
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        let real = cx.path(&self.path);
        if plan.ops::<CreateOp>().next().is_none() {
            return apply_meta(&real, plan.ops::<MetaOp>());
        }
        if let Some(parent) = real.parent() {
            fs::DirBuilder::new().recursive(true).mode(0o755).create(parent)?;
        }
        let mode = self.own.mode.unwrap_or(Mode(0o755));
        fs::DirBuilder::new()
            .mode(mode.0)
            .create(&real)
            .with_context(|| format!("cannot create {}", self.target()))?;
        // The umask may have narrowed the mode: set owner and mode exactly.
        apply_meta(&real, self.own.with_mode(mode).all_ops().iter())
    }
}
