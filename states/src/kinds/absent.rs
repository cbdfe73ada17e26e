//! `absent`: nothing at `path`. A file others may read keeps its last version in the backup
//! directory; a private one (no read for others: it may hold a secret) is removed without a
//! copy, and an earlier copy of it goes too. A non-empty directory is removed only with
//! `recursive = true`.

use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use nix::sys::stat::SFlag;
use nix::unistd::{unlinkat, UnlinkatFlags};
use serde::Deserialize;

use crate::engine::atomic::{backup, forget_backup, is_private, sync_dir};
use crate::engine::beneath;
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
        let mut plan = Plan::default();
        // Looked at inside its directory, reached without following a link: what is planned
        // for is what `apply` removes.
        let Some((dir, name)) = beneath::find_parent(cx, &self.path, None)? else { return Ok(plan) };
        let Some(st) = beneath::lstat_at(&dir, &name)? else { return Ok(plan) };
        let kind = beneath::kind(&st);
        if kind == SFlag::S_IFDIR {
            let entries = fs::read_dir(dir.join(&name))
                .with_context(|| format!("cannot read {}", self.target()))?
                .count();
            if entries > 0 && !self.recursive {
                bail!("{} is a directory with {entries} entries; set `recursive = true` to remove it", self.target());
            }
            plan.push(Change::new(format!("remove directory ({entries} entries)"), RemoveOp::Dir));
        } else if kind == SFlag::S_IFLNK {
            plan.push(Change::new("remove symlink", RemoveOp::File { keep_copy: false }))
        } else if is_private(st.st_mode) {
            // No diff: the removed content may be secret. Its last version is in the backup,
            // unless it is private: a copy would keep a rotated-out secret forever.
            plan.push(Change::new(
                format!("remove file ({} bytes; private, so no copy is kept)", st.st_size),
                RemoveOp::File { keep_copy: false },
            ))
        } else {
            plan.push(Change::new(format!("remove file ({} bytes)", st.st_size), RemoveOp::File { keep_copy: true }))
        }
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        let (dir, name) = beneath::open_parent(cx, &self.path, None, None)?;
        for op in plan.ops::<RemoveOp>() {
            match op {
                RemoveOp::File { keep_copy } => {
                    // `backup` opens it without following a link.
                    if *keep_copy {
                        backup(cx, &self.path, &dir.join(&name))?;
                    } else if beneath::lstat_at(&dir, &name)?.is_some_and(|st| beneath::kind(&st) != SFlag::S_IFLNK) {
                        forget_backup(cx, &self.path)?;
                    }
                    unlinkat(&dir, name.as_str(), UnlinkatFlags::NoRemoveDir).map_err(std::io::Error::from)
                }
                // Does not follow a link in the tree (nor one put in its place).
                RemoveOp::Dir => fs::remove_dir_all(dir.join(&name)),
            }
            .with_context(|| format!("cannot remove {}", self.target()))?;
        }
        sync_dir(&dir.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_removed_through_a_linked_directory() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let cx = Context::for_tests(root.path());
        fs::write(elsewhere.path().join("sudoers"), "keep").unwrap();
        fs::create_dir_all(root.path().join("var/lib")).unwrap();
        // An application's directory swapped for a link by its user (uid 1000).
        let link = root.path().join("var/lib/app");
        std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(1000), None).unwrap();
        let mut t = toml::Table::new();
        t.insert("path".into(), "/var/lib/app/sudoers".into());
        let state = AbsentState::build(t).unwrap();
        let err = format!("{:#}", state.plan(&cx).err().expect("a plan through the link"));
        assert!(err.contains("/var/lib/app is a symbolic link owned by user 1000"), "{err}");
        // A plan made before the swap: the removal is refused too.
        let mut plan = Plan::default();
        plan.push(Change::new("remove file", RemoveOp::File { keep_copy: true }));
        let err = format!("{:#}", state.apply(&cx, &plan).expect_err("a removal through the link"));
        assert!(err.contains("/var/lib/app is a symbolic link"), "{err}");
        assert_eq!(fs::read_to_string(elsewhere.path().join("sudoers")).unwrap(), "keep");

        // Without the link, the file there goes.
        fs::remove_file(&link).unwrap();
        fs::create_dir(&link).unwrap();
        fs::write(link.join("sudoers"), "x").unwrap();
        let plan = state.plan(&cx).unwrap();
        state.apply(&cx, &plan).unwrap();
        assert!(!link.join("sudoers").exists());
        assert!(state.plan(&cx).unwrap().changes.is_empty());
    }
}
