//! etcd's v3 API through its JSON gateway (etcd 3.4: `/v3/...`, POST with a JSON body):
//! membership only. bootstrap never reads or writes keys; Patroni owns what is stored.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use reqwest::blocking::Client;
use serde_json::{json, Value};

use crate::sys::rest;

/// How long one call to a member may take: a member that does not answer within it is
/// treated as down, so a dead peer costs a run at most this much.
pub const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// A uint64, kept as the decimal string the gateway gives.
    pub id: String,
    /// Empty for a member added but never started.
    pub name: String,
    pub peer_urls: Vec<String>,
}

pub fn client() -> Result<Client> {
    rest::client(TIMEOUT)
}

fn members(v: &Value) -> Vec<Member> {
    let strings = |m: &Value, k: &str| -> Vec<String> {
        m[k].as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
    };
    v["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| Member {
                    id: m["ID"].as_str().map(str::to_string).unwrap_or_else(|| m["ID"].to_string()),
                    name: m["name"].as_str().unwrap_or("").to_string(),
                    peer_urls: strings(m, "peerURLs"),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The members, as the member at `client_url` (http://HOST:2379) sees them.
pub fn member_list(c: &Client, client_url: &str) -> Result<Vec<Member>> {
    let v = rest::call_ok(c, "POST", &format!("{client_url}/v3/cluster/member/list"), Some(&json!({})), None)?;
    Ok(members(&v))
}

/// Adds a member with `peer_url`; the list afterwards (the new one nameless until it starts).
pub fn member_add(c: &Client, client_url: &str, peer_url: &str) -> Result<Vec<Member>> {
    let body = json!({ "peerURLs": [peer_url] });
    let v = rest::call_ok(c, "POST", &format!("{client_url}/v3/cluster/member/add"), Some(&body), None)?;
    Ok(members(&v))
}

/// Removes the member `id`. etcd refuses (503, "unhealthy cluster") while a member that would
/// remain has been connected for less than its health interval (5 s), as right after a join:
/// asked again for a while before that is an error.
pub fn member_remove(c: &Client, client_url: &str, id: &str) -> Result<()> {
    member_remove_within(c, client_url, id, REMOVE_WAIT)
}

/// Longer than etcd's health interval (5 s), with room for a slow peer.
const REMOVE_WAIT: Duration = Duration::from_secs(20);

fn member_remove_within(c: &Client, client_url: &str, id: &str, wait: Duration) -> Result<()> {
    let body = json!({ "ID": id });
    let url = format!("{client_url}/v3/cluster/member/remove");
    let deadline = Instant::now() + wait;
    loop {
        let a = rest::call(c, "POST", &url, Some(&body), None)?;
        match a.status {
            200..=299 => return Ok(()),
            503 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
            503 => bail!(
                "POST {url} answered 503 for {}s: the cluster stays unhealthy without this member",
                wait.as_secs()
            ),
            s => bail!("POST {url} answered {s}"),
        }
    }
}

/// Whether the member at `client_url` says it is healthy (it has a leader and answers).
pub fn healthy(c: &Client, client_url: &str) -> bool {
    rest::call(c, "GET", &format!("{client_url}/health"), None, None)
        .is_ok_and(|a| a.status == 200 && a.json["health"].as_str() == Some("true"))
}

/// The first of `client_urls` that answers a member list, with the list.
pub fn first_answer(c: &Client, client_urls: &[String]) -> Result<Option<(String, Vec<Member>)>> {
    let mut errors = Vec::new();
    for url in client_urls {
        match member_list(c, url) {
            Ok(m) => return Ok(Some((url.clone(), m))),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if client_urls.is_empty() {
        return Ok(None);
    }
    Err(anyhow!("no etcd member answers: {}", errors.join("; ")))
}

#[cfg(test)]
mod remove_tests {
    use super::*;

    /// A member that answers each request with the next of `statuses`.
    fn member(statuses: &[u16]) -> String {
        let (port, _) = crate::sys::http::serve(statuses.iter().map(|s| (*s, b"{}".to_vec())).collect());
        format!("http://127.0.0.1:{port}")
    }

    #[test]
    fn a_remove_refused_while_a_new_member_settles_is_asked_again() {
        crate::sys::http::install_tls_provider();
        let c = client().unwrap();
        member_remove_within(&c, &member(&[503, 503, 200]), "1", Duration::from_secs(10)).unwrap();
        let e = member_remove_within(&c, &member(&[503, 503, 503, 503]), "1", Duration::from_millis(600)).unwrap_err();
        assert!(e.to_string().contains("answered 503 for 0s"), "{e}");
        let e = member_remove_within(&c, &member(&[404]), "1", Duration::from_secs(10)).unwrap_err();
        assert!(e.to_string().contains("answered 404"), "{e}");
    }
}
