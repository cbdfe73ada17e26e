//! Fetching the operator's files: a conditional GET, so an unchanged file costs one short
//! round trip; a bounded time and size; no redirect away from https; URL credentials never in
//! a message. Plain http is for files whose signature or pinned sha256 the caller checks (the
//! transport is not what is trusted).

use std::io::Read;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use reqwest::blocking::Client;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use reqwest::StatusCode;

/// What a conditional GET brought.
pub enum Fetched {
    /// The server says the copy we have is current (304).
    NotModified,
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
        last_modified: Option<String>,
    },
}

/// Validators of the copy we have, sent as `If-None-Match` / `If-Modified-Since`.
#[derive(Default, Clone)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// Make ring the process's TLS provider (idempotent). reqwest is built without one, so that no
/// aws-lc-rs is linked: ring builds static with plain gcc.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An unconditional GET: the body (at most `cap` bytes, within `timeout`).
pub fn get_body(url: &str, timeout: Duration, cap: u64) -> Result<Vec<u8>> {
    match get(url, None, timeout, cap)? {
        Fetched::Body { bytes, .. } => Ok(bytes),
        Fetched::NotModified => bail!("{} answered 304 to an unconditional request", shown(url)),
    }
}

/// `url` without credentials, for messages.
pub fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(an invalid URL)".into(),
    }
}

/// GET `url` (at most `cap` bytes, within `timeout`), conditionally when `have` is given.
pub fn get(url: &str, have: Option<&Validators>, timeout: Duration, cap: u64) -> Result<Fetched> {
    let show = shown(url);
    let parsed = url::Url::parse(url).map_err(|e| anyhow!("`{show}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        bail!("`{show}`: only https:// (or http:// to a server you name) is fetched");
    }
    install_tls_provider();
    let mut builder = Client::builder();
    if parsed.scheme() == "http" {
        // No TLS here: spare loading the system's trust store (most of a request's cost).
        builder = builder.tls_certs_only(Vec::new());
    }
    let client = builder
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            match refused_redirect(attempt.previous(), attempt.url()) {
                Some(why) => attempt.error(why),
                None => attempt.follow(),
            }
        }))
        .build()
        .context("cannot set up the HTTP client")?;
    let mut req = client.get(parsed);
    if let Some(v) = have {
        if let Some(e) = &v.etag {
            req = req.header(IF_NONE_MATCH, e);
        }
        if let Some(m) = &v.last_modified {
            req = req.header(IF_MODIFIED_SINCE, m);
        }
    }
    let resp = req.send().map_err(|e| anyhow!("cannot fetch {show}: {}", without_url(&e)))?;
    let status = resp.status();
    if status == StatusCode::NOT_MODIFIED && have.is_some() {
        return Ok(Fetched::NotModified);
    }
    if !status.is_success() {
        bail!("fetching {show} answered {status}");
    }
    if resp.content_length().is_some_and(|n| n > cap) {
        bail!("{show} is larger than the {cap} bytes allowed");
    }
    let header = |name| {
        resp.headers().get(name).and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok()).map(str::to_string)
    };
    let (etag, last_modified) = (header(ETAG), header(LAST_MODIFIED));
    let mut bytes = Vec::new();
    resp.take(cap.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| anyhow!("reading {show} failed: {e}"))?;
    if bytes.len() as u64 > cap {
        bail!("{show} is larger than the {cap} bytes allowed");
    }
    Ok(Fetched::Body { bytes, etag, last_modified })
}

/// Why a redirect to `next` after `previous` is not followed: never off https once a request
/// went there, nor more than 5 in a row.
fn refused_redirect(previous: &[url::Url], next: &url::Url) -> Option<&'static str> {
    let from_https = previous.iter().any(|u| u.scheme() == "https");
    if next.scheme() != "https" && from_https {
        Some("a redirect away from https")
    } else if previous.len() > 5 {
        Some("too many redirects")
    } else {
        None
    }
}

/// reqwest's error without the URL it carries (which may hold credentials).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_redirect() {
        "refused a redirect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// For unit tests of what talks HTTP: a server on 127.0.0.1 that answers one request per
/// `(status, body)` in turn, then stops. Returns its port and its thread.
#[cfg(test)]
pub(crate) fn serve(answers: Vec<(u16, Vec<u8>)>) -> (u16, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        for ((status, body), s) in answers.into_iter().zip(listener.incoming()) {
            let mut s = s.unwrap();
            let _ = s.read(&mut [0u8; 4096]);
            let head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    (port, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_away_from_https_is_refused() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        let https = [u("https://files.example/a")];
        assert_eq!(refused_redirect(&https, &u("http://files.example/a")), Some("a redirect away from https"));
        // Also later in a chain that went through https.
        let chain = [u("http://files.example/a"), u("https://files.example/b")];
        assert_eq!(refused_redirect(&chain, &u("http://files.example/c")), Some("a redirect away from https"));
        assert_eq!(refused_redirect(&https, &u("https://mirror.example/a")), None);
        // Plain http to plain http: the caller checks what it gets (a signature, a sha256).
        assert_eq!(refused_redirect(&[u("http://files.example/a")], &u("http://mirror.example/a")), None);
        let many: Vec<_> = (0..6).map(|i| u(&format!("https://files.example/{i}"))).collect();
        assert_eq!(refused_redirect(&many, &u("https://files.example/6")), Some("too many redirects"));
    }
}
