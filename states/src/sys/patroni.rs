//! Patroni's REST API (port 8008 on the private address): its dynamic configuration (read
//! freely, changed with the API's basic-auth credentials), the cluster view, a switchover.

use std::time::Duration;

use anyhow::{bail, Result};
use reqwest::blocking::Client;
use serde_json::{json, Value};

use crate::sys::rest;

pub const TIMEOUT: Duration = Duration::from_secs(5);

pub fn client() -> Result<Client> {
    rest::client(TIMEOUT)
}

/// The dynamic configuration stored in the DCS (`GET /config`).
pub fn config(c: &Client, api: &str) -> Result<Value> {
    rest::call_ok(c, "GET", &format!("{api}/config"), None, None)
}

/// Merges `patch` into the dynamic configuration (`PATCH /config`); Patroni applies it on
/// every member in its next cycle.
pub fn patch_config(c: &Client, api: &str, patch: &Value, auth: (&str, &str)) -> Result<()> {
    rest::call_ok(c, "PATCH", &format!("{api}/config"), Some(patch), Some(auth))?;
    Ok(())
}

/// This member's state as its Patroni reports it (`GET /patroni`): `running`, `starting`,
/// `creating replica`, `stopped`, …
pub fn member_state(c: &Client, api: &str) -> Result<String> {
    let a = rest::call(c, "GET", &format!("{api}/patroni"), None, None)?;
    Ok(a.json["state"].as_str().unwrap_or("unknown").to_string())
}

/// Waits until this member runs (PostgreSQL up, as leader or replica).
pub fn wait_running(c: &Client, api: &str, limit: Duration) -> Result<()> {
    let t = std::time::Instant::now();
    let mut last = String::new();
    while t.elapsed() < limit {
        match member_state(c, api) {
            Ok(s) if s == "running" => return Ok(()),
            Ok(s) => last = s,
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("Patroni did not run PostgreSQL within {}s (last: {last}); see `journalctl -u patroni`", limit.as_secs())
}

#[derive(Clone, Debug)]
pub struct ClusterMember {
    pub name: String,
    /// `leader`, `sync_standby`, `replica`, …
    pub role: String,
    /// `running`, `streaming`, `starting`, `stopped`, …
    pub state: String,
    pub host: String,
    pub timeline: Option<i64>,
    /// Replication lag in bytes (replicas), as Patroni reports it.
    pub lag: Option<i64>,
}

/// The members as this node's Patroni sees them (`GET /cluster`).
pub fn cluster(c: &Client, api: &str) -> Result<Vec<ClusterMember>> {
    let v = rest::call_ok(c, "GET", &format!("{api}/cluster"), None, None)?;
    let Some(members) = v["members"].as_array() else { bail!("{api}/cluster: no member list in the answer") };
    Ok(members
        .iter()
        .map(|m| ClusterMember {
            name: m["name"].as_str().unwrap_or("").to_string(),
            role: m["role"].as_str().unwrap_or("").to_string(),
            state: m["state"].as_str().unwrap_or("").to_string(),
            host: m["host"].as_str().unwrap_or("").to_string(),
            timeline: m["timeline"].as_i64(),
            lag: m["lag"].as_i64(),
        })
        .collect())
}

/// Hands the leadership from `leader` to any healthy replica (`POST /switchover`), waiting
/// for Patroni to carry it out.
pub fn switchover(api: &str, leader: &str, auth: (&str, &str)) -> Result<()> {
    let slow = rest::client(Duration::from_secs(60))?;
    rest::call_ok(&slow, "POST", &format!("{api}/switchover"), Some(&json!({ "leader": leader })), Some(auth))?;
    Ok(())
}

/// Waits until a member other than `me` leads (after a switchover).
pub fn wait_leader_elsewhere(c: &Client, api: &str, me: &str, limit: Duration) -> Result<()> {
    let t = std::time::Instant::now();
    while t.elapsed() < limit {
        if let Ok(ms) = cluster(c, api) {
            if ms.iter().any(|m| m.name != me && m.role == "leader" && m.state == "running") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("no other member took the leadership within {}s", limit.as_secs())
}
