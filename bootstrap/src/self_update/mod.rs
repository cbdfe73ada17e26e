//! `bootstrap self-update [--to V] [--rollback]`, and the site's `bootstrap_version` pin that
//! makes every node converge to one release: only releases signed with the key built into
//! this binary (`release.rs`), swapped in without a moment without a working binary
//! (`swap.rs`), as a state of the run when the site pins a version (`pin.rs`).

pub mod pin;
pub mod release;
pub mod swap;

use std::cmp::Ordering;
use std::os::unix::fs::MetadataExt;

use anyhow::{bail, Result};
use states::engine::layout::{Layout, INSTALLED, PREVIOUS};

use crate::cli::Opts;
use crate::{inputs, lock};
use release::VERSION;

/// What `self-update` was asked.
pub struct Request {
    pub to: Option<String>,
    pub rollback: bool,
    pub allow_downgrade: bool,
    pub release_url: Option<String>,
}

/// The version of the installed binary: this one's when it runs from there, else its answer.
pub fn installed_version(layout: &Layout) -> Result<String> {
    let installed = layout.installed();
    let same = |a: &std::fs::Metadata, b: &std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
    let me = std::env::current_exe().and_then(std::fs::metadata);
    match (me, std::fs::metadata(&installed)) {
        (Ok(a), Ok(b)) if same(&a, &b) => Ok(VERSION.to_string()),
        (_, Ok(_)) => swap::version_of(&installed),
        (_, Err(_)) => bail!("bootstrap is not installed at {INSTALLED}: install the node first (`./bootstrap app`)"),
    }
}

pub fn command(opts: &Opts, req: &Request) -> Result<i32> {
    let layout = Layout::new(&opts.root);
    let _lock = match lock::acquire(&opts.root, true)? {
        Some(lock::Lock::Busy) => return Ok(lock::busy()),
        held => held,
    };
    let current = installed_version(&layout)?;
    if req.rollback {
        let v = swap::rollback(&layout)?;
        println!("rolled back: {INSTALLED} is bootstrap {v} again ({current} is kept as {PREVIOUS})");
        let values = inputs::gather(opts, &[], false).map(|i| i.values).unwrap_or_default();
        warn_if_pinned_elsewhere(setting(&values, "bootstrap_version"), &v);
        return Ok(0);
    }
    // The node's settings say where releases are and which one the site pins.
    let values = inputs::gather(opts, &[], false)?.values;
    let pinned = setting(&values, "bootstrap_version");
    let Some(url) = req.release_url.clone().or_else(|| setting(&values, "release_url")) else {
        bail!("where are the releases? give --release-url URL or set `release_url` in the site settings");
    };
    let wanted = req.to.clone().or_else(|| pinned.clone());
    let m = release::manifest(&url, wanted.as_deref())?;
    let order = release::compare(&m.version, &current)?;
    if order == Ordering::Equal {
        println!("bootstrap {current} is installed: nothing to do");
        return Ok(0);
    }
    // The site's pin is the operator's signed wish: it may go down; anything else must be told.
    let told = req.allow_downgrade || (req.to.is_none() && pinned.is_some());
    if order == Ordering::Less && !told {
        bail!(
            "release {} is older than the installed {current}: refused (a downgrade needs --allow-downgrade, or \
             `bootstrap_version` in the site settings)",
            m.version
        );
    }
    let bytes = release::binary(&url, &m)?;
    swap::install(&layout, &bytes, &m.version)?;
    println!("updated: {INSTALLED} is bootstrap {} (was {current}, kept as {PREVIOUS})", m.version);
    warn_if_pinned_elsewhere(pinned, &m.version);
    Ok(0)
}

/// A string setting that is set (not empty).
pub fn setting(values: &toml::Table, name: &str) -> Option<String> {
    values.get(name).and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(str::to_string)
}

/// The site's pin undoes what the operator just did by hand: say so.
fn warn_if_pinned_elsewhere(pinned: Option<String>, installed: &str) {
    if let Some(p) = pinned.filter(|p| release::compare(p, installed).ok() != Some(Ordering::Equal)) {
        eprintln!("note: the site pins bootstrap_version = {p}: the next run returns the node to it");
    }
}
