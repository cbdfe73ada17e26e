//! The last known good peer lists, `/var/lib/bootstrap/peers.json`, and the rule that updates
//! them from a lookup. A DNS outage must not empty haproxy's pools, and a peer that drops out
//! of DNS for a moment must not flap out of them: a failed lookup (no answer) keeps the known
//! list as it is, and a peer missing from successful lookups stays until it has been missing
//! for the grace period. Timestamps are passed in, so the rule is tested without sleeping.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::engine::atomic::write_plain;
use crate::engine::context::Context;

/// One address of one peer, as templates see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// The SRV target (`db1.lab.test.`) or the static entry's host.
    pub host: String,
    pub address: String,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
    /// The TXT strings at `<txt>.<host>` when the discovery asks for them (`txt = "_label"`):
    /// a key the peer publishes. Always present, so templates may name it.
    #[serde(default)]
    pub txt: Vec<String>,
}

impl Peer {
    /// What makes two entries the same peer; priority and weight are attributes that may change.
    fn key(&self) -> (&str, &str, u16) {
        (&self.host, &self.address, self.port)
    }
}

/// Priority first (lower is preferred, as in SRV), then heavier first, then by name: a stable
/// order, so a no-op run renders byte-identical configuration.
pub fn sort(peers: &mut [Peer]) {
    peers.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
}

fn order_key(p: &Peer) -> (u16, Reverse<u16>, &str, &str, u16) {
    (p.priority, Reverse(p.weight), &p.host, &p.address, p.port)
}

/// A peer as remembered, with when it was first missing from a successful lookup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownPeer {
    #[serde(flatten)]
    pub peer: Peer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_since: Option<u64>,
}

/// One peer set as remembered. `source` describes what was looked up: a list remembered for
/// another SRV name must not leak into this one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    pub source: String,
    pub peers: Vec<KnownPeer>,
}

/// Peer sets by `[discover.NAME]`.
pub type Store = BTreeMap<String, Known>;

/// What one lookup saw.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    pub peers: Vec<Peer>,
    /// Why the lookup as a whole failed (no answer, refused, a server failure): the known list
    /// stands unchanged. An answer with no records is not a failure.
    pub failed: Option<String>,
    /// Hosts whose addresses could not be looked up: their known entries are kept as they are,
    /// since nothing was learnt about them.
    pub unresolved: BTreeSet<String>,
}

/// The new known list after `obs` at `now` (seconds since the epoch), `grace` in seconds.
pub fn merge(known: &[KnownPeer], obs: &Observation, now: u64, grace: u64) -> Vec<KnownPeer> {
    let mut out: Vec<KnownPeer> = Vec::new();
    let mut keys = BTreeSet::new();
    for p in &obs.peers {
        if keys.insert(p.key()) {
            out.push(KnownPeer { peer: p.clone(), missing_since: None });
        }
    }
    for k in known.iter().filter(|k| !keys.contains(&k.peer.key())) {
        if obs.failed.is_some() || obs.unresolved.contains(&k.peer.host) {
            out.push(k.clone());
            continue;
        }
        let since = k.missing_since.unwrap_or(now);
        if now.saturating_sub(since) < grace {
            out.push(KnownPeer { peer: k.peer.clone(), missing_since: Some(since) });
        }
    }
    // The rendered order, so an unchanged store also serializes identically.
    out.sort_by(|a, b| order_key(&a.peer).cmp(&order_key(&b.peer)));
    out
}

pub fn path(cx: &Context) -> PathBuf {
    cx.layout().peers()
}

/// The remembered lists; a missing file is an empty store, and so is an unreadable one (with a
/// warning): it is a cache of DNS, and the next successful lookup rebuilds it.
pub fn load(cx: &Context) -> Store {
    let path = path(cx);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable peer store");
            Store::new()
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Store::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the peer store");
            Store::new()
        }
    }
}

pub fn save(cx: &Context, store: &Store) -> Result<()> {
    let path = path(cx);
    let bytes = serde_json::to_vec_pretty(store)?;
    write_plain(&path, &bytes, 0o600).with_context(|| format!("cannot record the known peers in {}", path.display()))
}
