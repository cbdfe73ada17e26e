//! `certificate`: a usable certificate bundle (chain + private key in one PEM file, as haproxy
//! reads it) exists at `path`, so the web server can start on a fresh node before any CA was
//! reached. A missing, unparsable, expired bundle, one whose key does not match or whose names
//! do not cover `names`, is replaced by a new self-signed one valid for `days`. Any valid
//! bundle that covers the names is left alone, whoever issued it: this state never fights
//! `acme`, which replaces the self-signed certificate with a CA's.
//!
//! The file holds a private key: it is written 0600, and plans show summaries only, never its
//! content.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use crate::engine::atomic::{self, FileWrite};
use crate::engine::beneath;
use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State};
use crate::engine::build::{display, managed_path, params, Builder};
use crate::files::ownership::{apply_meta_at, MetaOp, Mode, Ownership};
use crate::sys::x509::{self, Bundle};

const MODE: u32 = 0o600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    path: PathBuf,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default = "default_days")]
    days: u32,
}

fn default_days() -> u32 {
    90
}

pub fn build(t: toml::Table, b: &mut Builder) -> Result<Box<dyn State>> {
    let p: Params = params(t)?;
    if p.days == 0 {
        bail!("`days` must be at least 1");
    }
    let path = managed_path(&p.path)?;
    let names = names_or_hostname(p.names, &b.cx.facts.hostname)?;
    Ok(Box::new(CertificateState { path, names, days: p.days }))
}

/// The names a certificate must cover: those given, or the node's hostname.
pub fn names_or_hostname(names: Vec<String>, hostname: &str) -> Result<Vec<String>> {
    let names = if names.is_empty() && !hostname.is_empty() { vec![hostname.to_string()] } else { names };
    if names.is_empty() {
        bail!("`names` is empty and the hostname is unknown");
    }
    for n in &names {
        let bare = n.strip_prefix("*.").unwrap_or(n);
        let label_ok = |l: &str| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        };
        if n.len() > 253 || !bare.split('.').all(label_ok) {
            bail!("`names`: `{n}` is not a DNS name");
        }
    }
    Ok(names)
}

/// What the bundle at `path` is, or why there is none to judge.
pub enum Current {
    Missing,
    Unreadable(String),
    Present(Bundle),
}

/// Read as the write will go: through its directory reached without following a link, the
/// file itself neither a link nor a FIFO.
pub fn current(cx: &Context, path: &Path) -> Result<Current> {
    let Some((dir, name)) = beneath::find_parent(cx, path, None)? else { return Ok(Current::Missing) };
    let here = dir.join(&name);
    match atomic::read_regular(&here)? {
        Some(bytes) => Ok(match x509::inspect(&bytes) {
            Ok(b) => Current::Present(b),
            Err(e) => Current::Unreadable(format!("{e:#}")),
        }),
        None => match fs::symlink_metadata(&here) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Current::Missing),
            _ => Ok(Current::Unreadable("not a regular file (a link, a FIFO, or a file with another name too)".into())),
        },
    }
}

/// Why `b` can't serve `names` right now; `None` when it can.
pub fn defect(b: &Bundle, names: &[String], now: SystemTime) -> Option<String> {
    let uncovered = b.uncovered(names);
    if !b.key_matches {
        Some("its private key is missing or does not match".into())
    } else if b.expired(now) {
        Some(format!("it expired ({})", x509::describe(b)))
    } else if !uncovered.is_empty() {
        Some(format!("it does not cover {}", uncovered.join(", ")))
    } else {
        None
    }
}

/// For `bootstrap status`: names, expiry and issuer of the certificate at `path` (a path on the
/// running system), or `None` when there is no readable certificate.
pub fn expiry(path: &Path) -> Option<(Vec<String>, SystemTime, String)> {
    let b = x509::inspect(&fs::read(path).ok()?).ok()?;
    let not_after = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(b.not_after.max(0) as u64);
    Some((b.names, not_after, b.issuer))
}

struct CertificateState {
    path: PathBuf,
    names: Vec<String>,
    days: u32,
}

/// Write a new self-signed bundle.
struct CreateOp;

impl State for CertificateState {
    /// Until the ACME CA answers, this self-signed certificate holds the same file.
    fn claims(&self) -> Vec<Claim> {
        vec![Claim::path(&self.path).shared_with("acme")]
    }

    fn target(&self) -> String {
        display(&self.path)
    }

    /// The names may come from the hostname fact, which the parameters don't show.
    fn digest(&self) -> Option<String> {
        Some(self.names.join(","))
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        let why = match current(cx, &self.path)? {
            Current::Missing => Some("there is none".to_string()),
            Current::Unreadable(e) => Some(format!("the file is not a usable bundle: {e}")),
            Current::Present(b) => defect(&b, &self.names, SystemTime::now()).or_else(|| {
                // Our own stand-in is renewed a week before it expires; a CA's is left to `acme`.
                (b.self_signed && b.days_left(SystemTime::now()) < 7).then(|| "it expires within a week".to_string())
            }),
        };
        let mut plan = Plan::default();
        match why {
            Some(why) => plan.push(Change::new(
                format!("create self-signed certificate for {} ({why})", self.names.join(", ")),
                CreateOp,
            )),
            None => {
                let (dir, name) = beneath::open_parent(cx, &self.path, None, None)?;
                let meta = fs::symlink_metadata(dir.join(&name))
                    .with_context(|| format!("cannot inspect {}", display(&self.path)))?;
                let own = Ownership { mode: Some(Mode(MODE)), ..Default::default() };
                plan.changes.extend(own.plan(&meta));
            }
        }
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        if plan.ops::<CreateOp>().next().is_none() {
            return apply_meta_at(cx, &self.path, plan.ops::<MetaOp>());
        }
        let bytes = x509::self_signed_for_days(&self.names, self.days)?;
        let w = FileWrite { uid: None, gid: None, mode: MODE, validate: None, secret: true };
        atomic::write_file(cx, &self.path, &bytes, &w)
    }
}
