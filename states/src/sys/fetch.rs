//! Downloads for `file` states with a `source` URL: https/http through reqwest (rustls), or
//! `file://` for local artifacts (the request itself is `sys::http`'s). The caller verifies the
//! sha256.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};

pub fn fetch(url: &str) -> Result<Vec<u8>> {
    if let Some(path) = url.strip_prefix("file://") {
        return std::fs::read(path).with_context(|| format!("cannot read {url}"));
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        bail!("unsupported URL scheme in `{url}` (https, http or file)");
    }
    crate::sys::http::get_body(url, Duration::from_secs(300), u64::MAX)
}
