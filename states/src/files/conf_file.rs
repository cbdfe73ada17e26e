//! A small configuration file whose whole content a module generates (a cron.d entry, a
//! sysctl.d drop-in): root-owned, mode 0644, written atomically, planned with a diff. Daemons
//! that read such directories (cron, systemd-sysctl) ignore or distrust files that are
//! group/world-writable or not owned by root, so owner and mode are part of the state.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};

use crate::engine::atomic::{self, FileWrite};
use crate::engine::beneath;
use crate::engine::build::display;
use crate::engine::content::unified_diff;
use crate::engine::context::Context;
use crate::engine::contract::{Change, Plan};
use crate::files::ownership::{apply_meta_at, MetaOp, Mode, Ownership};

pub struct ConfFile {
    /// Absolute, as on the node; resolved under the root.
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// Replace the content (and with it owner and mode).
struct WriteOp;

fn root_0644() -> Ownership {
    Ownership { owner: Some("0".into()), group: Some("0".into()), mode: Some(Mode(0o644)) }
}

impl ConfFile {
    /// The changes that make the file match: a write with a diff, or owner/mode fixes.
    pub fn plan(&self, cx: &Context) -> Result<Vec<Change>> {
        let shown = display(&self.path);
        let create = || {
            let diff = unified_diff(&shown, b"", &self.bytes, false);
            Ok(vec![Change::new(format!("create {shown}"), WriteOp).with_diff(Some(diff))])
        };
        // Through the parent opened without following links, as the write will go.
        let Some((dir, name)) = beneath::find_parent(cx, &self.path, None)? else { return create() };
        let real = dir.join(&name);
        let meta = match fs::symlink_metadata(&real) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return create(),
            Err(e) => return Err(e).with_context(|| format!("cannot inspect {shown}")),
        };
        if meta.is_dir() {
            bail!("{shown} is a directory, not a file");
        }
        let replace = || Ok(vec![Change::new(format!("replace {shown} (not a regular file)"), WriteOp)]);
        if !meta.is_file() {
            return replace();
        }
        // Swapped for something else since, or linked elsewhere too: written anew all the same.
        let Some(have) = atomic::read_regular(&real)? else { return replace() };
        if have != self.bytes {
            // What a file only its owner may read held is shown by no diff (as `file` does).
            let diff = unified_diff(&shown, &have, &self.bytes, meta.mode() & 0o077 == 0);
            return Ok(vec![Change::new(format!("update {shown}"), WriteOp).with_diff(Some(diff))]);
        }
        Ok(root_0644().plan(&meta))
    }

    /// Carry out the file's part of `plan` (other modules' ops in it are ignored).
    pub fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        if plan.ops::<WriteOp>().next().is_some() {
            let w = FileWrite { uid: Some(0), gid: Some(0), mode: 0o644, validate: None, secret: false };
            return atomic::write_file(cx, &self.path, &self.bytes, &w);
        }
        apply_meta_at(cx, &self.path, plan.ops::<MetaOp>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{lchown, symlink, PermissionsExt};

    #[test]
    fn the_plan_reads_nothing_through_a_link_another_user_placed() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("job"), "* * * * * root /bin/true\n").unwrap();
        fs::create_dir_all(t.path().join("etc")).unwrap();
        symlink(outside.path(), t.path().join("etc/cron.d")).unwrap();
        lchown(t.path().join("etc/cron.d"), Some(1000), None).unwrap();
        let cx = Context::for_tests(t.path());
        let f = ConfFile { path: "/etc/cron.d/job".into(), bytes: b"x\n".to_vec() };
        let err = f.plan(&cx).err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(err.contains("/etc/cron.d is a symbolic link owned by user 1000"), "{err}");
        // Missing directories: a plain create.
        let g = ConfFile { path: "/etc/sysctl.d/90-x.conf".into(), bytes: b"x\n".to_vec() };
        assert_eq!(g.plan(&cx).unwrap().len(), 1);
    }

    #[test]
    fn what_a_file_only_its_owner_reads_held_is_in_no_diff() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("etc/cron.d")).unwrap();
        let path = t.path().join("etc/cron.d/job");
        fs::write(&path, "TOKEN=canary-in-a-cron-file\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let cx = Context::for_tests(t.path());
        let f = ConfFile { path: "/etc/cron.d/job".into(), bytes: b"* * * * * root /bin/true\n".to_vec() };
        let diff = f.plan(&cx).unwrap()[0].diff.clone().unwrap_or_default();
        assert!(!diff.contains("canary") && diff.contains("<redacted: 1 lines"), "{diff}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let diff = f.plan(&cx).unwrap()[0].diff.clone().unwrap_or_default();
        assert!(diff.contains("-TOKEN=canary-in-a-cron-file"), "{diff}");
    }
}
