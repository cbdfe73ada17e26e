//! The signed site bundle a node follows: given at install (`--site URL --site-key KEY`) and
//! recorded in `node.toml`, then refreshed at the start of every run, before the roles load.
//! A bundle that can't be had (server away, bad signature, older serial) leaves the node on
//! its last good one, and the run reports it; with no good one at all, nothing changes.

use anyhow::{bail, Result};
use states::engine::layout::Layout;
use states::engine::report::SiteStatus;
use states::pipeline::bundle::{self, Current, Origin};
use states::sys::http::shown;

use crate::cli::Opts;
use crate::node;

/// The bundle this run follows: the one given on the command line, else the recorded one.
pub fn origin(opts: &Opts) -> Result<Option<Origin>> {
    if let Some(key) = &opts.site_key {
        let Some(url) = opts.site.as_deref().filter(|u| u.starts_with("https://") || u.starts_with("http://")) else {
            bail!("--site-key goes with `--site URL` of a site bundle (made by `bootstrap site pack`)");
        };
        states::sys::signature::public_key(key)?;
        return Ok(Some(Origin { url: url.to_string(), key: key.clone() }));
    }
    let recorded = node::load(&opts.root)?;
    Ok(recorded.and_then(|n| Some(Origin { url: n.site_url?, key: n.site_key? })))
}

/// Refresh and return the bundle to use, with what the report says of it. A newer bundle
/// replaces the last good one only when `accept` takes it.
pub fn follow(opts: &Opts, origin: &Origin, accept: bundle::Accept<'_>) -> Result<(Current, SiteStatus)> {
    let r = bundle::refresh(&Layout::new(&opts.root), origin, !opts.check, accept);
    let status = status(origin, &r.record, r.current.as_ref().map(|c| c.serial));
    match r.current {
        Some(current) => {
            if let Some(e) = &status.error {
                // The server's or a tool's text: escaped, as every message is.
                let e = crate::output::printable(e);
                eprintln!("site bundle: {e}; converging to the last good one (serial {})", current.serial);
            }
            Ok((current, status))
        }
        None => bail!(
            "cannot get the site bundle {}: {}. Nothing was changed.",
            status.url,
            status.error.as_deref().unwrap_or("no bundle")
        ),
    }
}

/// What the report says of a bundle of `serial` from `origin`.
pub fn status(origin: &Origin, record: &bundle::Record, serial: Option<u64>) -> SiteStatus {
    SiteStatus {
        url: shown(&origin.url),
        serial,
        fetched_at: record.fetched_at,
        verified_at: record.verified_at,
        error: record.error.clone(),
    }
}
