//! `absent`: nothing at `path`. A file others may read keeps its last version in the backup
//! directory; a private one (no read for others: it may hold a secret) is removed without a
//! copy, and an earlier copy of it goes too. A non-empty directory is removed only with
//! `recursive = true`.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use crate::engine::atomic::{backup, forget_backup, sync_dir};
use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State};
use crate::engine::build::{display, managed_path, params, Builder};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    path: PathBuf,
    #[serde(default)]
    recursive: bool,
}

pub struct AbsentState {
    path: PathBuf,
    recursive: bool,
}

enum RemoveOp {
    File { keep_copy: bool },
    Dir,
}

pub fn build(t: toml::Table, _b: &mut Builder) -> Result<Box<dyn State>> {
    Ok(Box::new(AbsentState::build(t)?))
}

impl AbsentState {
    pub fn build(t: toml::Table) -> Result<Self> {
        let p: Params = params(t)?;
        Ok(AbsentState { path: managed_path(&p.path)?, recursive: p.recursive })
    }
}

impl State for AbsentState {
    fn claims(&self) -> Vec<Claim> {
        vec![Claim::path(&self.path)]
    }

    fn target(&self) -> String {
        display(&self.path)
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        let real = cx.path(&self.path);
        let mut plan = Plan::default();
        match fs::symlink_metadata(&real) {
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", self.target())),
            Ok(m) if m.is_dir() => {
                let entries = fs::read_dir(&real)?.count();
                if entries > 0 && !self.recursive {
                    bail!("{} is a directory with {entries} entries; set `recursive = true` to remove it", self.target());
                }
                plan.push(Change::new(format!("remove directory ({entries} entries)"), RemoveOp::Dir));
            }
            Ok(m) if m.file_type().is_symlink() => {
                plan.push(Change::new("remove symlink", RemoveOp::File { keep_copy: false }))
            }
            // No diff: the removed content may be secret. Its last version is in the backup,
            // unless it is private: a copy would keep a rotated-out secret forever.
            Ok(m) if m.permissions().mode() & 0o004 == 0 => plan.push(Change::new(
                format!("remove file ({} bytes; private, so no copy is kept)", m.len()),
                RemoveOp::File { keep_copy: false },
            )),
            Ok(m) => {
                plan.push(Change::new(format!("remove file ({} bytes)", m.len()), RemoveOp::File { keep_copy: true }))
            }
        }
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        let real = cx.path(&self.path);
        for op in plan.ops::<RemoveOp>() {
            match op {
                RemoveOp::File { keep_copy } => {
                    if *keep_copy {
                        backup(cx, &self.path, &real)?;
                    } else if !real.is_symlink() {
                        forget_backup(cx, &self.path)?;
                    }
                    fs::remove_file(&real)
                }
                RemoveOp::Dir => fs::remove_dir_all(&real),
            }
            .with_context(|| format!("cannot remove {}", self.target()))?;
        }
        if let Some(dir) = real.parent() {
            sync_dir(dir)?;
        }
        Ok(())
    }
}
