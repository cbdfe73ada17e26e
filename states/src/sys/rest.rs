//! JSON over plain HTTP to a peer on the private network (etcd's v3 gateway, Patroni's REST
//! API): short timeouts, no redirects, no proxy, a capped answer. The body and any
//! credentials never appear in a message: only the method, the URL and the status.

use std::io::Read;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use reqwest::blocking::Client;
use serde_json::Value;

/// The most an answer may hold (a member list, a cluster view, a configuration).
const CAP: u64 = 1 << 20;

/// An answer: its status and its body as JSON (`Null` when it is not JSON).
pub struct Answer {
    pub status: u16,
    pub json: Value,
}

/// A client for `timeout`-bounded calls; build one per run and reuse it.
pub fn client(timeout: Duration) -> Result<Client> {
    Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tls_certs_only(Vec::new())
        .build()
        .context("cannot set up the HTTP client")
}

/// `method url` with an optional JSON body and basic authentication.
pub fn call(c: &Client, method: &str, url: &str, body: Option<&Value>, auth: Option<(&str, &str)>) -> Result<Answer> {
    let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| anyhow!("bad method {method}"))?;
    let mut req = c.request(m, url);
    if let Some(b) = body {
        req = req.header("Content-Type", "application/json").body(b.to_string());
    }
    if let Some((user, password)) = auth {
        req = req.basic_auth(user, Some(password));
    }
    let resp = req.send().map_err(|e| anyhow!("{method} {url}: {}", kind(&e)))?;
    let status = resp.status().as_u16();
    let mut bytes = Vec::new();
    resp.take(CAP + 1).read_to_end(&mut bytes).map_err(|e| anyhow!("{method} {url}: reading the answer: {e}"))?;
    if bytes.len() as u64 > CAP {
        bail!("{method} {url}: the answer is larger than {CAP} bytes");
    }
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Answer { status, json })
}

/// `call` that wants a 2xx answer.
pub fn call_ok(c: &Client, method: &str, url: &str, body: Option<&Value>, auth: Option<(&str, &str)>) -> Result<Value> {
    let a = call(c, method, url, body, auth)?;
    if !(200..300).contains(&a.status) {
        bail!("{method} {url} answered {}", a.status);
    }
    Ok(a.json)
}

fn kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    }
}
