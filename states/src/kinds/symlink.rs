//! `symlink`: a link at `path` pointing to `target`, replaced atomically. An existing file is
//! replaced only with `force = true`; a directory never is.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use nix::fcntl::{readlinkat, renameat};
use nix::sys::stat::SFlag;
use nix::unistd::{symlinkat, unlinkat, UnlinkatFlags};
use serde::Deserialize;

use crate::engine::atomic::sync_dir;
use crate::engine::beneath;
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
        let want = self.target.display();
        let mut plan = Plan::default();
        // Looked at inside its directory, reached without following a link.
        let found = beneath::find_parent(cx, &self.path, None)?;
        let st = match &found {
            Some((dir, name)) => beneath::lstat_at(dir, name)?.map(|st| beneath::kind(&st)),
            None => None,
        };
        match (st, &found) {
            (Some(SFlag::S_IFLNK), Some((dir, name))) => {
                let have = PathBuf::from(
                    readlinkat(dir, name.as_str()).with_context(|| format!("cannot read the link {}", self.target()))?,
                );
                if have != self.target {
                    plan.push(Change::new(format!("retarget {} -> {want}", have.display()), LinkOp));
                }
            }
            (Some(SFlag::S_IFDIR), _) => bail!("{} is a directory; it is never replaced by a symlink", self.target()),
            (Some(_), _) if self.force => plan.push(Change::new(format!("replace file with symlink -> {want}"), LinkOp)),
            (Some(_), _) => bail!("{} is a file; set `force = true` to replace it with a symlink", self.target()),
            (None, _) => plan.push(Change::new(format!("create symlink -> {want}"), LinkOp)),
        }
        Ok(plan)
    }

    fn apply(&self, cx: &Context, _plan: &Plan) -> Result<()> {
        // Missing parents 0755, reached without following a link; the new link is made beside
        // the name and renamed over it, all inside that directory.
        let (dir, name) = beneath::open_parent(cx, &self.path, Some(0o755), None)?;
        let tmp = format!(".{name}.bootstrap-link-{}", std::process::id());
        let _ = unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        symlinkat(&self.target, &dir, tmp.as_str())
            .with_context(|| format!("cannot create a symlink beside {}", self.target()))?;
        renameat(&dir, tmp.as_str(), &dir, name.as_str()).with_context(|| format!("cannot replace {}", self.target()))?;
        sync_dir(&dir.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    #[test]
    fn no_link_is_made_through_a_linked_directory() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let cx = Context::for_tests(root.path());
        fs::create_dir_all(root.path().join("var/lib")).unwrap();
        // An application's directory swapped for a link by its user (uid 1000).
        let link = root.path().join("var/lib/app");
        std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(1000), None).unwrap();
        let mut t = toml::Table::new();
        t.insert("path".into(), "/var/lib/app/current".into());
        t.insert("target".into(), "/etc/shadow".into());
        let state = SymlinkState::build(t).unwrap();
        let err = format!("{:#}", state.plan(&cx).err().expect("a plan through the link"));
        assert!(err.contains("/var/lib/app is a symbolic link owned by user 1000"), "{err}");
        let err = format!("{:#}", state.apply(&cx, &Plan::default()).expect_err("a link made through the link"));
        assert!(err.contains("/var/lib/app is a symbolic link"), "{err}");
        assert!(fs::read_dir(elsewhere.path()).unwrap().next().is_none(), "a link was made through the link");

        // Without the link: made, then converged.
        fs::remove_file(&link).unwrap();
        fs::create_dir(&link).unwrap();
        let plan = state.plan(&cx).unwrap();
        assert_eq!(plan.changes[0].summary, "create symlink -> /etc/shadow");
        state.apply(&cx, &plan).unwrap();
        assert_eq!(fs::read_link(link.join("current")).unwrap(), Path::new("/etc/shadow"));
        assert!(state.plan(&cx).unwrap().changes.is_empty());
    }
}
