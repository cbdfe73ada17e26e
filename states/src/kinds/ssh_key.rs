//! `ssh_key`: the node's own SSH key pair, made once on the node and never copied anywhere.
//!
//! ```toml
//! [[state]]
//! id = "sshfs-client-key"
//! type = "ssh_key"
//! path = "/etc/bootstrap/sshfs/id_ed25519"   # the private key; the public one is PATH.pub
//! comment = "{{facts.hostname}} shared storage"
//! ```
//!
//! A missing key is generated (ed25519, by `ssh-keygen`, in a private directory next to the
//! path, then moved in place: a run killed halfway leaves no half key). The private key is
//! root's, mode 0600; the public one 0644, remade from the private one when it is missing.
//! A working key is never replaced: whoever trusts it (a storage node, through DNS) would
//! lose this node; a file there that holds no key (empty after a crash) is made again. Plans
//! show only paths and modes, never the key.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use crate::engine::atomic::{sync_dir, write_plain};
use crate::engine::beneath;
use crate::engine::build::{display, managed_path, params, Builder};
use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State};
use crate::files::ownership::{apply_meta, apply_meta_at, MetaOp, Mode, Ownership};
use crate::sys::ssh_keygen;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    path: PathBuf,
    #[serde(default)]
    comment: String,
}

pub struct SshKeyState {
    private: PathBuf,
    public: PathBuf,
    comment: String,
}

enum Op {
    Generate,
    /// Write the public key from the private one.
    Public,
    PrivateMeta(MetaOp),
    PublicMeta(MetaOp),
}

fn own(mode: u32) -> Ownership {
    Ownership { owner: Some("0".into()), group: Some("0".into()), mode: Some(Mode(mode)) }
}

pub fn build(t: toml::Table, _b: &mut Builder) -> Result<Box<dyn State>> {
    let p: Params = params(t)?;
    let private = managed_path(&p.path)?;
    let mut public = private.clone().into_os_string();
    public.push(".pub");
    if p.comment.chars().any(|c| c.is_control()) {
        bail!("`comment` must be one line");
    }
    Ok(Box::new(SshKeyState { private, public: public.into(), comment: p.comment }))
}

/// The metadata of a regular file at `path`, `None` when there is none.
fn regular(path: &Path, shown: &str) -> Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => Ok(Some(m)),
        Ok(_) => bail!("{shown} exists and is not a regular file"),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot inspect {shown}")),
    }
}

/// Whether `path` looks like an OpenSSH private key (its armor lines), read without keeping it
/// (nor following a link, nor waiting on a FIFO).
fn is_private_key(path: &Path) -> bool {
    let Ok(Some(bytes)) = crate::engine::atomic::read_regular(path) else { return false };
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") && text.ends_with("-----END OPENSSH PRIVATE KEY-----")
}

impl SshKeyState {
    fn meta_changes(&self, meta: &fs::Metadata, mode: u32, what: &str, wrap: fn(MetaOp) -> Op) -> Vec<Change> {
        own(mode)
            .plan(meta)
            .into_iter()
            .map(|c| {
                let op = c.op::<MetaOp>().cloned().expect("ownership plans carry a MetaOp");
                Change::new(format!("{what}: {}", c.summary), wrap(op))
            })
            .collect()
    }

    /// The key's directory, reached without following a link (made if missing: its own
    /// directory 0700, any missing above it 0755), and the two file names in it.
    fn open(&self, cx: &Context) -> Result<(beneath::Dir, String, String)> {
        let parent = self.private.parent().context("a key path has a directory")?;
        if let Some(above) = parent.parent() {
            beneath::open_dir(cx, above, Some(0o755), None)?;
        }
        let dir = beneath::open_dir(cx, parent, Some(0o700), None)?;
        Ok((dir, file_name(&self.private)?, file_name(&self.public)?))
    }

    fn generate(&self, cx: &Context) -> Result<()> {
        let (opened, private, public) = self.open(cx)?;
        let dir = opened.path();
        // ssh-keygen writes into a private directory beside the key; both halves are moved
        // in place after (the public one first, so a private key never lacks its public one
        // for long, and one that does gets it back on the next run).
        // Work directories of a run killed while making a key hold a private key: gone.
        for stale in fs::read_dir(&dir)?.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(".ssh-key.")) {
            let _ = fs::remove_dir_all(stale.path());
        }
        let work = tempfile::Builder::new().prefix(".ssh-key.").tempdir_in(&dir)?;
        fs::set_permissions(work.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let work_name = work.path().file_name().context("a work directory has a name")?.to_owned();
        // ssh-keygen can't reach this process's descriptors: it gets the ordinary path.
        let for_child = cx.path(opened.resolved()).join(&work_name).join("key");
        ssh_keygen::generate(cx.runner.as_ref(), &for_child, &self.comment)?;
        let key = work.path().join("key");
        let mut key_pub = key.clone().into_os_string();
        key_pub.push(".pub");
        apply_meta(Path::new(&key_pub), own(0o644).all_ops().iter())?;
        apply_meta(&key, own(0o600).all_ops().iter())?;
        // On disk before the names point at them: a power cut must not leave an empty key.
        for f in [Path::new(&key_pub), key.as_path()] {
            fs::File::open(f)?.sync_all()?;
        }
        fs::rename(&key_pub, opened.join(&public))?;
        fs::rename(&key, opened.join(&private))?;
        sync_dir(&dir)
    }
}

fn file_name(p: &Path) -> Result<String> {
    p.file_name().and_then(|n| n.to_str()).map(str::to_string).with_context(|| format!("{} has no file name", p.display()))
}

impl State for SshKeyState {
    fn claims(&self) -> Vec<Claim> {
        vec![Claim::path(&self.private), Claim::path(&self.public)]
    }

    fn target(&self) -> String {
        display(&self.private)
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        let mut plan = Plan::default();
        let (private, public) = (display(&self.private), display(&self.public));
        let generate = |why: &str| {
            Change::new(
                format!("generate an ed25519 key pair{why} ({public} to publish; the private key stays here, mode 0600)"),
                Op::Generate,
            )
        };
        // Through the directory as the write will reach it, without following a link.
        let Some((dir, name)) = beneath::find_parent(cx, &self.private, None)? else {
            plan.push(generate(""));
            return Ok(plan);
        };
        let Some(meta) = regular(&dir.join(&name), &private)? else {
            plan.push(generate(""));
            return Ok(plan);
        };
        // A key file that is not one (empty after a crash, truncated) is of no use to anyone:
        // made again (whoever trusted it gets the new public key through DNS).
        if !is_private_key(&dir.join(&name)) {
            plan.push(generate(&format!(" ({private} holds no OpenSSH private key)")));
            return Ok(plan);
        }
        plan.changes.extend(self.meta_changes(&meta, 0o600, &private, Op::PrivateMeta));
        match regular(&dir.join(&file_name(&self.public)?), &public)? {
            Some(m) => plan.changes.extend(self.meta_changes(&m, 0o644, &public, Op::PublicMeta)),
            None => plan.push(Change::new(format!("write {public} from the private key"), Op::Public)),
        }
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        for op in plan.ops::<Op>() {
            match op {
                Op::Generate => self.generate(cx)?,
                Op::Public => {
                    let (dir, private, public) = self.open(cx)?;
                    let for_child = cx.path(dir.resolved()).join(&private);
                    let line = ssh_keygen::public_of(cx.runner.as_ref(), &for_child)?;
                    // ssh-keygen -y gives the comment the key was made with, if it has one.
                    let has_comment = line.split_whitespace().count() > 2;
                    let text = if has_comment || self.comment.is_empty() { line } else { format!("{line} {}", self.comment) };
                    write_plain(&dir.join(&public), format!("{text}\n").as_bytes(), 0o644)?;
                }
                Op::PrivateMeta(m) => apply_meta_at(cx, &self.private, std::iter::once(m))?,
                Op::PublicMeta(m) => apply_meta_at(cx, &self.public, std::iter::once(m))?,
            }
        }
        Ok(())
    }
}
