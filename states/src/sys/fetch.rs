//! Downloads for `file` states with a `source` URL: https/http through reqwest (rustls), or
//! `file://` for local artifacts (the request itself is `sys::http`'s). The caller verifies the
//! sha256. URLs reach messages only without their credentials (`http::shown`).

use std::io::Read;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::sys::http::shown;

/// The most a `source` may hold: it is read into memory to be hashed and written (an
/// artifact or a binary, not a disk image).
pub const MAX_SOURCE_BYTES: u64 = 256 << 20;

pub fn fetch(url: &str) -> Result<Vec<u8>> {
    fetch_capped(url, MAX_SOURCE_BYTES)
}

fn fetch_capped(url: &str, cap: u64) -> Result<Vec<u8>> {
    if let Some(path) = url.strip_prefix("file://") {
        let show = shown(url);
        let f = std::fs::File::open(path).with_context(|| format!("cannot read {show}"))?;
        let mut bytes = Vec::new();
        f.take(cap.saturating_add(1)).read_to_end(&mut bytes).with_context(|| format!("cannot read {show}"))?;
        if bytes.len() as u64 > cap {
            bail!("{show} is larger than the {cap} bytes allowed");
        }
        return Ok(bytes);
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        bail!("unsupported URL scheme in `{}` (https, http or file)", shown(url));
    }
    crate::sys::http::get_body(url, Duration::from_secs(300), cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers one request with `body`.
    fn serve_once(body: Vec<u8>) -> (u16, std::thread::JoinHandle<()>) {
        crate::sys::http::serve(vec![(200, body)])
    }

    #[test]
    fn a_source_larger_than_the_cap_is_refused_over_http_and_from_a_file() {
        let (port, h) = serve_once(vec![b'x'; 101]);
        let e = format!("{:#}", fetch_capped(&format!("http://ops:hunter2pw@127.0.0.1:{port}/big"), 100).unwrap_err());
        h.join().unwrap();
        assert!(e.contains(&format!("http://127.0.0.1:{port}/big is larger than the 100 bytes allowed")), "{e}");
        assert!(!e.contains("hunter2pw"), "{e}");
        let (port, h) = serve_once(vec![b'x'; 100]);
        assert_eq!(fetch_capped(&format!("http://127.0.0.1:{port}/fits"), 100).unwrap().len(), 100);
        h.join().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 101]).unwrap();
        let url = format!("file://{}", big.display());
        let e = format!("{:#}", fetch_capped(&url, 100).unwrap_err());
        assert!(e.contains("is larger than the 100 bytes allowed") && e.contains(&url), "{e}");
        assert_eq!(fetch_capped(&url, 101).unwrap().len(), 101);
        // A device with no end is cut at the cap, not read until memory runs out.
        assert!(fetch_capped("file:///dev/zero", 100).is_err());
    }

    #[test]
    fn no_message_shows_a_urls_credentials() {
        let e = format!("{:#}", fetch("ftp://ops:hunter2pw@files.example/a.tar").unwrap_err());
        assert!(e.contains("unsupported URL scheme in `ftp://files.example/a.tar`"), "{e}");
        // Nothing listens on port 1: the connection error names the URL without them.
        let e = format!("{:#}", fetch("http://ops:hunter2pw@127.0.0.1:1/a.tar").unwrap_err());
        assert!(e.contains("http://127.0.0.1:1/a.tar") && !e.contains("hunter2pw"), "{e}");
    }
}
