//! Downloads for `file` states with a `source` URL: https/http through reqwest (rustls), or
//! `file://` for local artifacts (the request itself is `sys::http`'s). The caller verifies the
//! sha256.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};

/// Make ring the process's TLS provider (idempotent). reqwest is built without one, so that no
/// aws-lc-rs is linked: ring builds static with plain gcc.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn fetch(url: &str) -> Result<Vec<u8>> {
    if let Some(path) = url.strip_prefix("file://") {
        return std::fs::read(path).with_context(|| format!("cannot read {url}"));
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        bail!("unsupported URL scheme in `{url}` (https, http or file)");
    }
    match crate::sys::http::get(url, None, Duration::from_secs(300), u64::MAX)? {
        crate::sys::http::Fetched::Body { bytes, .. } => Ok(bytes),
        crate::sys::http::Fetched::NotModified => {
            bail!("{} answered 304 to a plain request", crate::sys::http::shown(url))
        }
    }
}
