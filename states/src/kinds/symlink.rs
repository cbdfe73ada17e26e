//! `symlink`: a link at `path` pointing to `target`, replaced atomically. An existing file is
//! replaced only with `force = true`; a directory never is.

use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Deserialize;

use crate::engine::atomic::sync_dir;
use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State};
use crate::engine::build::{display, managed_path, params, Builder};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    path: PathBuf,
    target: PathBuf,
    #[serde(default)]
    force: bool,
}

pub struct SymlinkState {
    path: PathBuf,
    target: PathBuf,
    force: bool,
}

struct LinkOp;

pub fn build(t: toml::Table, _b: &mut Builder) -> Result<Box<dyn State>> {
    Ok(Box::new(SymlinkState::build(t)?))
}

impl SymlinkState {
    pub fn build(t: toml::Table) -> Result<Self> {
        let p: Params = params(t)?;
        if p.target.as_os_str().is_empty() {
            bail!("`target` is empty");
        }
        Ok(SymlinkState { path: managed_path(&p.path)?, target: p.target, force: p.force })
    }
}

impl State for SymlinkState {
    fn claims(&self) -> Vec<Claim> {
        vec![Claim::path(&self.path)]
    }

    fn target(&self) -> String {
        display(&self.path)
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        let real = cx.path(&self.path);
        let want = self.target.display();
        let mut plan = Plan::default();
        match fs::symlink_metadata(&real) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                plan.push(Change::new(format!("create symlink -> {want}"), LinkOp));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", self.target())),
            Ok(m) if m.file_type().is_symlink() => {
                let have = fs::read_link(&real)?;
                if have != self.target {
                    plan.push(Change::new(format!("retarget {} -> {want}", have.display()), LinkOp));
                }
            }
            Ok(m) if m.is_dir() => bail!("{} is a directory; it is never replaced by a symlink", self.target()),
            Ok(_) if self.force => plan.push(Change::new(format!("replace file with symlink -> {want}"), LinkOp)),
            Ok(_) => bail!("{} is a file; set `force = true` to replace it with a symlink", self.target()),
        }
        Ok(plan)
    }

    fn apply(&self, cx: &Context, _plan: &Plan) -> Result<()> {
        let real = cx.path(&self.path);
        let dir = real.parent().ok_or_else(|| anyhow!("{} has no parent", self.target()))?;
        fs::create_dir_all(dir)?;
        let name = real.file_name().and_then(|n| n.to_str()).unwrap_or("link");
        let tmp = dir.join(format!(".{name}.bootstrap-link-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&self.target, &tmp)
            .with_context(|| format!("cannot create a symlink in {}", dir.display()))?;
        fs::rename(&tmp, &real).with_context(|| format!("cannot replace {}", self.target()))?;
        sync_dir(dir)
    }
}
