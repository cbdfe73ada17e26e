//! The operator's signed site bundle on a node: fetched on every run (a conditional request),
//! verified against the key recorded at install, refused when older than the one applied, and
//! kept as the last good one (`/var/lib/bootstrap/site/`) for when the server is away. The run
//! then converges to the last good bundle; a failure to get a newer one is reported, never
//! fatal to the node's healing.

pub mod format;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::engine::atomic::{sync_dir, write_plain};
use crate::engine::layout::Layout;
use crate::sys::http::{self, Fetched, Validators};
use crate::sys::signature;

/// How long fetching the bundle (and its signature) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const SIGNATURE_CAP: u64 = 4096;

/// Where the bundle comes from and who signs it, as recorded at install.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Origin {
    pub url: String,
    /// The operator's minisign public key (`RW…`).
    pub key: String,
}

/// What the node knows of its bundle (`/var/lib/bootstrap/site/state.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// The serial of the bundle in `current/`.
    pub serial: Option<u64>,
    pub url: String,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub last_modified: Option<String>,
    /// When the server answered with a change or an error was recorded (the last run's report
    /// has the time of its own answer), seconds since the epoch.
    #[serde(default)]
    pub fetched_at: Option<u64>,
    /// When the bundle in `current/` was verified and unpacked.
    #[serde(default)]
    pub verified_at: Option<u64>,
    /// Why the last attempt failed, if it did.
    #[serde(default)]
    pub error: Option<String>,
}

/// The bundle a run uses.
pub struct Current {
    /// The unpacked bundle: `site.toml`, `roles/`.
    pub dir: PathBuf,
    pub serial: u64,
    /// Kept alive while a dry run uses a bundle it may not store.
    _scratch: Option<tempfile::TempDir>,
}

impl Current {
    /// The bundle's site settings (empty when it has none).
    pub fn site(&self) -> Result<toml::Table> {
        let path = self.dir.join("site.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| anyhow!("the site bundle's site.toml: {e}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(toml::Table::new()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn roles_dir(&self) -> PathBuf {
        self.dir.join("roles")
    }
}

/// The result of refreshing: the bundle to use (the new one, or the last good), and the
/// record to show (its `error` says why a newer one could not be had).
pub struct Refreshed {
    pub current: Option<Current>,
    pub record: Record,
}

fn dir(layout: &Layout) -> PathBuf {
    layout.state_dir().join("site")
}

fn record_path(layout: &Layout) -> PathBuf {
    dir(layout).join("state.json")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The record as stored (a default one when there is none).
pub fn record(layout: &Layout) -> Record {
    std::fs::read(record_path(layout)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// The last good bundle, without asking the server.
pub fn last_good(layout: &Layout) -> Option<Current> {
    current_at(layout, &record(layout))
}

/// The unpacked bundle `record` says is current.
fn current_at(layout: &Layout, record: &Record) -> Option<Current> {
    let serial = record.serial?;
    let dir = dir(layout).join("current");
    dir.is_dir().then_some(Current { dir, serial, _scratch: None })
}

/// What a node asks of a verified, newer bundle before it replaces the last good one: that the
/// node's roles compile from it (a signed bundle can still be a broken one).
pub type Accept<'a> = &'a dyn Fn(&Candidate) -> Result<()>;

/// A verified bundle not yet made current.
pub struct Candidate {
    pub dir: PathBuf,
    pub serial: u64,
}

impl Candidate {
    /// The candidate as a bundle a run could use, for checking it (it lives as long as `self`).
    pub fn as_current(&self) -> Current {
        Current { dir: self.dir.clone(), serial: self.serial, _scratch: None }
    }
}

/// Fetch `origin`'s bundle if it changed, verify it, check it with `accept` and make it
/// current. `persist` (a real run): store it and the record; a dry run unpacks a new bundle
/// into a scratch directory and stores nothing.
pub fn refresh(layout: &Layout, origin: &Origin, persist: bool, accept: Accept<'_>) -> Refreshed {
    let stored = record(layout);
    let mut record = stored.clone();
    if record.url != origin.url {
        // Another source: nothing of the old one's validators applies (its serial still does).
        record.etag = None;
        record.last_modified = None;
        record.url = origin.url.clone();
    }
    let outcome = fetch_verified(layout, origin, &record, persist, accept);
    let current = match outcome {
        Ok(Some((current, etag, last_modified))) => {
            record.serial = Some(current.serial);
            record.etag = etag;
            record.last_modified = last_modified;
            record.fetched_at = Some(now());
            record.verified_at = Some(now());
            record.error = None;
            Some(current)
        }
        Ok(None) => {
            record.fetched_at = Some(now());
            record.error = None;
            current_at(layout, &stored)
        }
        Err(e) => {
            record.error = Some(format!("{e:#}"));
            tracing::warn!("site bundle: {e:#}; keeping the last good one");
            current_at(layout, &stored)
        }
    };
    // Written only when more than the time of the last answer changed: an unchanged bundle
    // costs no write (the run's report carries `fetched_at`).
    let same_but_time = Record { fetched_at: stored.fetched_at, ..record.clone() } == stored;
    if persist && !same_but_time {
        if let Err(e) = save(layout, &record) {
            tracing::warn!("{e:#}");
        }
    }
    Refreshed { current, record }
}

type NewBundle = (Current, Option<String>, Option<String>);

/// `Ok(None)`: the server says the current bundle is still the one.
fn fetch_verified(
    layout: &Layout,
    origin: &Origin,
    record: &Record,
    persist: bool,
    accept: Accept<'_>,
) -> Result<Option<NewBundle>> {
    let key = signature::public_key(&origin.key)?;
    let have = current_at(layout, record)
        .is_some()
        .then(|| Validators { etag: record.etag.clone(), last_modified: record.last_modified.clone() });
    let (bytes, etag, last_modified) = match http::get(&origin.url, have.as_ref(), FETCH_TIMEOUT, format::MAX_BYTES)? {
        Fetched::NotModified => return Ok(None),
        Fetched::Body { bytes, etag, last_modified } => (bytes, etag, last_modified),
    };
    let sig_url = format!("{}.minisig", origin.url);
    let sig = String::from_utf8(http::get_body(&sig_url, FETCH_TIMEOUT, SIGNATURE_CAP)?)
        .map_err(|_| anyhow!("the signature is not text"))?;
    signature::verify(&key, &bytes, &sig).context("the site bundle's signature")?;
    // Verified: unpack beside the current one (or in scratch for a dry run), then check the serial.
    let (scratch, base) = if persist {
        std::fs::create_dir_all(dir(layout))?;
        (None, dir(layout))
    } else {
        let t = tempfile::tempdir()?;
        let p = t.path().to_path_buf();
        (Some(t), p)
    };
    let staged = base.join(format!("incoming.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staged);
    let manifest = match format::unpack(&bytes, &staged) {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(e.context("the site bundle"));
        }
    };
    if let Some(applied) = record.serial {
        let same = current_at(layout, record).is_some_and(|c| same_tree(&c.dir, &staged));
        if manifest.serial < applied || (manifest.serial == applied && !same) {
            let _ = std::fs::remove_dir_all(&staged);
            bail!(
                "the site bundle has serial {}, and this node applied serial {applied}: an older (or replayed) bundle is refused; pack a new one (`bootstrap site pack`)",
                manifest.serial
            );
        }
    }
    if let Err(e) = accept(&Candidate { dir: staged.clone(), serial: manifest.serial }) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e.context(format!("the site bundle serial {} is refused", manifest.serial)));
    }
    if !persist {
        return Ok(Some((Current { dir: staged, serial: manifest.serial, _scratch: scratch }, etag, last_modified)));
    }
    // Swap it in: the old current is removed only once the new one is in place.
    let current = dir(layout).join("current");
    let old = dir(layout).join("previous");
    let _ = std::fs::remove_dir_all(&old);
    if current.exists() {
        std::fs::rename(&current, &old)?;
    }
    std::fs::rename(&staged, &current)?;
    sync_dir(&dir(layout))?;
    let _ = std::fs::remove_dir_all(&old);
    write_plain(&dir(layout).join("bundle.minisig"), sig.as_bytes(), 0o644)?;
    tracing::info!(serial = manifest.serial, "site bundle {} verified and applied", manifest.serial);
    Ok(Some((Current { dir: current, serial: manifest.serial, _scratch: None }, etag, last_modified)))
}

fn save(layout: &Layout, record: &Record) -> Result<()> {
    std::fs::create_dir_all(dir(layout))?;
    let path = record_path(layout);
    write_plain(&path, &serde_json::to_vec_pretty(record)?, 0o644)
        .with_context(|| format!("cannot record the site bundle in {}", path.display()))
}

/// Whether two unpacked bundles hold the same files.
fn same_tree(a: &Path, b: &Path) -> bool {
    fn files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((p.strip_prefix(root).unwrap_or(&p).to_path_buf(), std::fs::read(&p).unwrap_or_default()));
                }
            }
        }
        out.sort();
        out
    }
    files(a) == files(b)
}
