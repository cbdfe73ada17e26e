//! bootstrap's own files on the node (its settings, roles record, secrets and binary) as one
//! more desired state: a `secrets.toml` made world-readable, or a binary cron
//! runs as root made writable by others, is shown by `--check` and healed by the next run like
//! any managed file. Their content is bootstrap's own business (written by install and
//! `secret set`); here only owner and mode, on what exists.

use std::path::Path;

use std::os::unix::fs::MetadataExt;

use anyhow::Result;
use states::engine::context::Context;
use states::engine::contract::{Change, Claim, Plan, State};
use states::engine::layout::{INSTALLED, NODE_FILE, PREVIOUS, SCRAM_KEY, SECRETS_FILE, SITE_FILE};
use states::engine::run::Node;
use states::files::ownership::{apply_meta_at, MetaOp, Mode, Ownership};

pub const ID: &str = "bootstrap-files";

/// Each path and the widest mode it may have; the owner is root. The directories (`/etc/bootstrap`, `/var/lib/bootstrap`) are the common role's states.
const FILES: &[(&str, u32)] = &[
    (SECRETS_FILE, 0o600),
    (SCRAM_KEY, 0o600),
    (SITE_FILE, 0o644),
    (NODE_FILE, 0o644),
    (INSTALLED, 0o755),
    (PREVIOUS, 0o755),
];

struct OwnFiles;

/// One attribute fix of one path.
struct Fix(String, MetaOp);

pub fn node() -> Node {
    Node { id: ID.into(), kind: "own files", state: Box::new(OwnFiles), requires: Vec::new(), notify: Vec::new() }
}

/// Root's on the running system; in a `--root` tree (tests, images) the running user's.
fn owner(cx: &Context) -> Ownership {
    let (uid, gid) = if cx.is_live() {
        (0, 0)
    } else {
        (nix::unistd::Uid::effective().as_raw(), nix::unistd::Gid::effective().as_raw())
    };
    Ownership { owner: Some(uid.to_string()), group: Some(gid.to_string()), mode: None }
}

impl State for OwnFiles {
    fn target(&self) -> String {
        "/etc/bootstrap/*.toml, the binary".into()
    }

    /// Not claimed: the binary is also the `bootstrap_version` pin's (whose swap keeps its
    /// mode), and this state only ever narrows a mode.
    fn claims(&self) -> Vec<Claim> {
        Vec::new()
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        let mut plan = Plan::default();
        for &(abs, mode) in FILES {
            // Links are not followed: a link in place of one of these is nobody's to fix here;
            // nor is one on the way (the fix would refuse it: the plan says so already).
            let Some((dir, name)) = states::engine::beneath::find_parent(cx, Path::new(abs), None)? else { continue };
            let Ok(meta) = std::fs::symlink_metadata(dir.join(&name)) else { continue };
            if meta.file_type().is_symlink() {
                continue;
            }
            // Only ever narrower: an operator's 0600 site.toml stays 0600.
            let have = meta.mode() & 0o7777;
            let own = Ownership { mode: (have & !mode != 0).then_some(Mode(have & mode)), ..owner(cx) };
            for c in own.plan(&meta) {
                let op = c.op::<MetaOp>().cloned().expect("ownership plans MetaOps");
                plan.push(Change::new(format!("{abs}: {}", c.summary), Fix(abs.to_string(), op)));
            }
        }
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        for Fix(abs, op) in plan.ops::<Fix>() {
            apply_meta_at(cx, Path::new(abs), std::iter::once(op))?;
        }
        Ok(())
    }
}
