//! A small configuration file whose whole content a module generates (a cron.d entry, a
//! sysctl.d drop-in): root-owned, mode 0644, written atomically, planned with a diff. Daemons
//! that read such directories (cron, systemd-sysctl) ignore or distrust files that are
//! group/world-writable or not owned by root, so owner and mode are part of the state.

use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};

use crate::engine::atomic::{self, FileWrite};
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
        let real = cx.path(&self.path);
        let shown = display(&self.path);
        let meta = match fs::symlink_metadata(&real) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let diff = unified_diff(&shown, b"", &self.bytes, false);
                return Ok(vec![Change::new(format!("create {shown}"), WriteOp).with_diff(Some(diff))]);
            }
            Err(e) => return Err(e).with_context(|| format!("cannot inspect {shown}")),
        };
        if meta.is_dir() {
            bail!("{shown} is a directory, not a file");
        }
        if !meta.is_file() {
            return Ok(vec![Change::new(format!("replace {shown} (not a regular file)"), WriteOp)]);
        }
        let have = fs::read(&real).with_context(|| format!("cannot read {shown}"))?;
        if have != self.bytes {
            let diff = unified_diff(&shown, &have, &self.bytes, false);
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
