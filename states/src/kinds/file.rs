//! `file`: a regular file with inline content, a rendered template, or a downloaded source with
//! a required sha256; owner, group and mode; an optional validator run before it goes live.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Deserialize;

use crate::engine::atomic::{self, FileWrite};
use crate::engine::beneath;
use crate::engine::content::{sha256_hex, sha256_hex_of, unified_diff, Content};
use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State};
use crate::sys::fetch::fetch;
use crate::sys::http;
use crate::engine::build::{display, managed_path, params, Builder};
use crate::files::ownership::{apply_meta_owned, MetaOp, Mode, Ownership};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    path: PathBuf,
    content: Option<String>,
    template: Option<String>,
    source: Option<String>,
    sha256: Option<String>,
    /// Marks inline content as secret (templates know by themselves).
    #[serde(default)]
    secret: bool,
    validate: Option<Argv>,
    owner: Option<String>,
    group: Option<String>,
    mode: Option<Mode>,
}

/// A command as one string (split like a shell would) or as a list.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum Argv {
    Line(String),
    List(Vec<String>),
}

impl Argv {
    pub fn into_vec(self) -> Result<Vec<String>> {
        let v = match self {
            Argv::Line(s) => shell_words::split(&s).map_err(|e| anyhow!("cannot split `{s}`: {e}"))?,
            Argv::List(v) => v,
        };
        if v.is_empty() {
            bail!("the command is empty");
        }
        Ok(v)
    }
}

enum Body {
    Inline(Content),
    Remote { url: String, sha256: String },
}

pub struct FileState {
    path: PathBuf,
    body: Body,
    own: Ownership,
    validate: Option<Vec<String>>,
}

/// Replace the content (and, with it, set owner and mode).
struct WriteOp;

pub fn build(t: toml::Table, b: &mut Builder) -> Result<Box<dyn State>> {
    Ok(Box::new(FileState::build(t, b)?))
}

impl FileState {
    pub fn build(t: toml::Table, b: &mut Builder) -> Result<Self> {
        let p: Params = params(t)?;
        let path = managed_path(&p.path)?;
        let body = match (p.content, p.template, p.source) {
            (Some(c), None, None) => Body::Inline(Content { bytes: c.into_bytes(), secret: p.secret }),
            (None, Some(t), None) => {
                let mut c = b.render(&t)?;
                c.secret |= p.secret;
                Body::Inline(c)
            }
            (None, None, Some(url)) => {
                let sha256 = p.sha256.ok_or_else(|| anyhow!("`source` needs a `sha256`"))?.to_lowercase();
                if sha256.len() != 64 || !sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
                    bail!("`sha256` must be 64 hex digits");
                }
                Body::Remote { url, sha256 }
            }
            _ => bail!("a file needs exactly one of `content`, `template` or `source`"),
        };
        let validate = p.validate.map(Argv::into_vec).transpose().context("`validate`")?;
        // A file holding a secret is root-only unless the role says otherwise, also when an
        // existing file had a wider mode.
        let secret = matches!(&body, Body::Inline(c) if c.secret);
        if let Some(m) = p.mode.filter(|m| secret && m.0 & 0o007 != 0) {
            bail!(
                "{} holds a secret, and `mode = \"{:04o}\"` lets every user of the node read or change it: \
                 give 0600 (or 0640 with a group)",
                display(&path),
                m.0
            );
        }
        let mode = p.mode.or(secret.then_some(Mode(0o600)));
        let own = Ownership { owner: p.owner, group: p.group, mode };
        Ok(FileState { path, body, own, validate })
    }

    /// Mode for a newly written file when the role gives none.
    fn default_mode(&self) -> u32 {
        match &self.body {
            Body::Inline(c) if c.secret => 0o600,
            _ => 0o644,
        }
    }
}

impl State for FileState {
    fn claims(&self) -> Vec<Claim> {
        vec![Claim::path(&self.path)]
    }

    fn target(&self) -> String {
        display(&self.path)
    }

    fn digest(&self) -> Option<String> {
        match &self.body {
            // Not a hash of a secret: a fingerprint is shown in reports.
            Body::Inline(c) if c.secret => Some("secret".into()),
            Body::Inline(c) => Some(sha256_hex(&c.bytes)),
            Body::Remote { sha256, .. } => Some(sha256.clone()),
        }
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        let shown = display(&self.path);
        let mut plan = Plan::default();
        // Through its directory reached without following a link, and the file opened without
        // following one nor waiting on a FIFO: what is compared is what a write replaces.
        let found = beneath::find_parent(cx, &self.path, self.own.owner_uid())?;
        let here = found.as_ref().map(|(dir, name)| dir.join(name));
        let meta = match here.as_deref().map(fs::symlink_metadata) {
            Some(Ok(m)) => Some(m),
            Some(Err(e)) if e.kind() != ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot inspect {shown}"))
            }
            _ => None,
        };
        let (Some(meta), Some(here)) = (meta, here) else {
            let (summary, diff) = match &self.body {
                Body::Inline(c) => (
                    format!("create file ({} bytes)", c.bytes.len()),
                    unified_diff(&shown, b"", &c.bytes, c.secret),
                ),
                Body::Remote { url, sha256 } => {
                    (format!("create file from {}", http::shown(url)), format!("sha256 {sha256}"))
                }
            };
            plan.push(Change::new(summary, WriteOp).with_diff(Some(diff)));
            return Ok(plan);
        };
        if meta.is_dir() {
            bail!("{shown} is a directory, not a file");
        }
        if meta.file_type().is_symlink() {
            plan.push(Change::new("replace symlink with a file", WriteOp));
            return Ok(plan);
        }
        let not_regular = || Change::new("replace what is there (not a regular file) with a file", WriteOp);
        match &self.body {
            Body::Inline(c) => match atomic::read_regular(&here)? {
                // Equal only when nothing was left unread (the read stops at 64 MiB).
                Some(have) if have == c.bytes && meta.len() == have.len() as u64 => {}
                Some(have) => {
                    // A file only its owner may read, where the role makes it readable by
                    // others, holds what someone else put there (a token placed by hand): shown
                    // by no diff (reports and the journal have other readers). One the role
                    // itself keeps owner-only holds what the role wrote, and is diffed.
                    let ours = self.own.mode.map_or(self.default_mode(), |m| m.0);
                    let private_there = meta.mode() & 0o077 == 0 && ours & 0o077 != 0;
                    let diff = unified_diff(&shown, &have, &c.bytes, c.secret || private_there);
                    plan.push(Change::new("content differs", WriteOp).with_diff(Some(diff)));
                }
                None => plan.push(not_regular()),
            },
            Body::Remote { url, sha256 } => match atomic::open_regular(&here)? {
                Some(f) => {
                    let have_sum = sha256_hex_of(f).with_context(|| format!("cannot read {shown}"))?;
                    if &have_sum != sha256 {
                        let diff = format!("sha256 {have_sum} -> {sha256}");
                        let summary = format!("content differs; download {}", http::shown(url));
                        plan.push(Change::new(summary, WriteOp).with_diff(Some(diff)));
                    }
                }
                None => plan.push(not_regular()),
            },
        }
        plan.changes.extend(self.own.plan(&meta));
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        let owner = self.own.owner_uid();
        if plan.ops::<WriteOp>().next().is_none() {
            return apply_meta_owned(cx, &self.path, owner, plan.ops::<MetaOp>());
        }
        let bytes = match &self.body {
            Body::Inline(c) => std::borrow::Cow::Borrowed(&c.bytes),
            Body::Remote { url, sha256 } => {
                let got = fetch(url)?;
                let sum = sha256_hex(&got);
                if &sum != sha256 {
                    bail!("{} has sha256 {sum}, expected {sha256}; nothing written", http::shown(url));
                }
                std::borrow::Cow::Owned(got)
            }
        };
        // Attributes the role leaves open are kept from the current file (the rename replaces
        // a symlink itself, never its target).
        let existing = beneath::find_parent(cx, &self.path, owner)?
            .and_then(|(dir, name)| fs::symlink_metadata(dir.join(&name)).ok())
            .filter(|m| m.is_file());
        let (uid, gid) = self.own.ids()?;
        let mode = self
            .own
            .mode
            .map(|m| m.0)
            .or(existing.as_ref().map(|m| m.mode() & 0o7777))
            .unwrap_or_else(|| self.default_mode());
        let w = FileWrite {
            uid: uid.or(existing.as_ref().map(|m| m.uid())),
            gid: gid.or(existing.as_ref().map(|m| m.gid())),
            mode,
            validate: self.validate.as_deref(),
            secret: matches!(&self.body, Body::Inline(c) if c.secret),
        };
        atomic::write_file(cx, &self.path, &bytes, &w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::build::Render;
    use std::path::Path;

    struct NoTemplates;
    impl Render for NoTemplates {
        fn render(&mut self, name: &str) -> Result<Content> {
            bail!("no template {name}")
        }
    }

    fn state(root: &Path, path: &str) -> (Context, FileState) {
        let cx = Context::for_tests(root);
        let mut t = toml::Table::new();
        t.insert("path".into(), path.into());
        t.insert("content".into(), "wanted\n".into());
        let s = FileState::build(t, &mut Builder::new("f", &cx, &mut NoTemplates)).unwrap();
        (cx, s)
    }

    #[test]
    fn a_source_urls_credentials_reach_no_summary_nor_error() {
        let (port, server) = crate::sys::http::serve(vec![(200, b"other".to_vec())]);
        let root = tempfile::tempdir().unwrap();
        let cx = Context::for_tests(root.path());
        let mut t = toml::Table::new();
        t.insert("path".into(), "/opt/tool".into());
        t.insert("source".into(), format!("http://ops:hunter2pw@127.0.0.1:{port}/tool").into());
        t.insert("sha256".into(), sha256_hex(b"wanted").into());
        let s = FileState::build(t, &mut Builder::new("f", &cx, &mut NoTemplates)).unwrap();
        let bare = format!("http://127.0.0.1:{port}/tool");

        let plan = s.plan(&cx).unwrap();
        assert_eq!(plan.changes[0].summary, format!("create file from {bare}"));
        let e = format!("{:#}", s.apply(&cx, &plan).unwrap_err());
        server.join().unwrap();
        assert!(e.starts_with(&format!("{bare} has sha256 ")) && !e.contains("hunter2pw"), "{e}");

        fs::create_dir_all(root.path().join("opt")).unwrap();
        fs::write(root.path().join("opt/tool"), "old").unwrap();
        let plan = s.plan(&cx).unwrap();
        assert_eq!(plan.changes[0].summary, format!("content differs; download {bare}"));
    }

    #[test]
    fn the_plan_reads_nothing_through_a_link_nor_waits_on_a_fifo() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        fs::write(elsewhere.path().join("conf"), "canary-shadow\n").unwrap();
        fs::create_dir_all(root.path().join("var/lib")).unwrap();
        // A directory its user (uid 1000) swapped for a link: its diff would show what is there.
        let link = root.path().join("var/lib/app");
        std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(1000), None).unwrap();
        let (cx, s) = state(root.path(), "/var/lib/app/conf");
        let err = format!("{:#}", s.plan(&cx).err().expect("a plan through the link"));
        assert!(err.contains("/var/lib/app is a symbolic link owned by user 1000"), "{err}");
        assert!(!err.contains("canary"), "{err}");

        // A link at the file itself is replaced, never read.
        fs::create_dir_all(root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join("conf"), root.path().join("etc/conf")).unwrap();
        let (cx, s) = state(root.path(), "/etc/conf");
        let plan = s.plan(&cx).unwrap();
        assert_eq!(plan.changes[0].summary, "replace symlink with a file");
        assert!(plan.changes[0].diff.is_none());

        // A FIFO: the plan returns (a read would wait for a writer forever).
        nix::unistd::mkfifo(&root.path().join("etc/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let (done, wait) = std::sync::mpsc::channel();
        let r = root.path().to_path_buf();
        std::thread::spawn(move || {
            let (cx, s) = state(&r, "/etc/fifo");
            let _ = done.send(s.plan(&cx).map(|p| p.changes[0].summary.clone()).map_err(|e| e.to_string()));
        });
        let summary = wait.recv_timeout(std::time::Duration::from_secs(10)).expect("the plan waited on the FIFO");
        assert_eq!(summary.unwrap(), "replace what is there (not a regular file) with a file");
    }
}
