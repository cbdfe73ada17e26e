//! Peer discovery: each `[discover.NAME]` of the roles becomes template data `peers.NAME`, a
//! list of `{ host, address, port, priority, weight }` looked up from DNS at the start of a
//! run, before the states compile (haproxy's pools are rendered from it).
//!
//! ```toml
//! [discover.db]
//! srv = "_postgresql._tcp.{{settings.domain}}"  # optional; empty means no SRV lookup
//! servers = ["198.18.0.1:53"]                    # optional; default: /etc/resolv.conf
//! static = ["198.18.0.20:5432", "db1.lab.test:5432"]  # optional; always added
//! grace_minutes = 60                             # optional
//! txt = "_sshfs-client-key"                      # optional: each peer's `txt` from DNS
//! ```
//!
//! One SRV query, then the A and AAAA records of every target (and of static host names), all
//! in parallel; every address is one entry. Static entries are added to the SRV answer (as
//! priority 0, weight 0), so a role can name a fixed peer and still discover the rest. Names
//! are absolute: no search list applies. A query waits at most 2 s and is sent twice, and a
//! whole lookup is cut off after `LOOKUP_CAP`, so a dead DNS server never stalls the
//! 15-minute run for long. With `txt = "_label"`, each host's TXT strings at `_label.<host>`
//! (a key it publishes) come as the peer's `txt` list; a host whose TXT lookup fails keeps
//! what was known of it.
//!
//! A failed lookup (no answer, refused, a server failure) keeps the last known list (with a
//! warning); a peer absent from an answer (an empty one included: the server said there are
//! no records) stays for `grace_minutes` before it is dropped (see `peers_store`). A stopped
//! DNS server is found by a one-round-trip probe, so it costs no retry timeouts.
//! The lists are remembered in `/var/lib/bootstrap/peers.json`, except in a dry run.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use futures_util::future::join_all;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::{system_conf, TokioResolver};
use serde::Deserialize;

use crate::engine::build::params;
use crate::engine::context::Context;
use crate::pipeline::peers_store::{self, Known, KnownPeer, Observation, Peer};
use crate::sys::dns_client::{self, fqdn, parse_server};

/// The most one peer set's lookup may take, retries included.
pub const LOOKUP_CAP: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    srv: String,
    #[serde(default)]
    servers: Vec<String>,
    #[serde(default, rename = "static")]
    static_peers: Vec<String>,
    #[serde(default = "default_grace")]
    grace_minutes: u64,
    /// Networks every peer must be in (the roles pass the private network): a mistaken or
    /// spoofed DNS answer must not point a pool anywhere else. Empty entries are ignored.
    #[serde(default)]
    within: Vec<String>,
    #[serde(default)]
    txt: String,
}

fn default_grace() -> u64 {
    60
}

/// A `[discover.NAME]` section, checked.
struct Spec {
    srv: Option<Name>,
    /// Empty: the system's resolver configuration.
    servers: Vec<SocketAddr>,
    static_peers: Vec<(Host, u16)>,
    grace_secs: u64,
    /// Empty: anywhere.
    within: Vec<ipnet::IpNet>,
    /// The label under each host whose TXT records are wanted.
    txt: Option<Name>,
}

enum Host {
    Ip(IpAddr),
    Name(Name),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => write!(f, "{n}"),
        }
    }
}

impl Spec {
    fn parse(t: toml::Table) -> Result<Spec> {
        let p: Params = params(t)?;
        let srv = match p.srv.trim() {
            "" => None,
            s => Some(fqdn(s)?),
        };
        let servers =
            p.servers.iter().filter(|s| !s.trim().is_empty()).map(|s| parse_server(s.trim())).collect::<Result<_>>()?;
        let static_peers = p
            .static_peers
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| parse_static(s.trim()))
            .collect::<Result<_>>()?;
        let within = p
            .within
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|_| anyhow!("`within`: `{s}` is not a network like `10.0.0.0/8`")))
            .collect::<Result<_>>()?;
        let txt = match p.txt.trim() {
            "" => None,
            t if t.contains('.') => anyhow::bail!("`txt` `{t}` must be one label (like `_sshfs-client-key`)"),
            t => Some(Name::from_ascii(t).map_err(|e| anyhow!("`txt` `{t}` is not a DNS label: {e}"))?),
        };
        Ok(Spec { srv, servers, static_peers, grace_secs: p.grace_minutes.saturating_mul(60), within, txt })
    }

    /// Whether `address` is inside the networks the peers must be in.
    fn allows(&self, address: &str) -> bool {
        self.within.is_empty() || address.parse::<IpAddr>().is_ok_and(|ip| self.within.iter().any(|n| n.contains(&ip)))
    }

    /// What is looked up; a remembered list for anything else is not reused.
    fn source(&self) -> String {
        let mut s = self.srv.as_ref().map(|n| format!("srv {n}")).unwrap_or_default();
        for (h, port) in &self.static_peers {
            s += &format!(" static {h}:{port}");
        }
        if let Some(t) = &self.txt {
            s += &format!(" txt {t}");
        }
        s
    }
}

/// `198.18.0.20:5432`, `[2001:db8::20]:5432` or `db1.lab.test:5432`.
fn parse_static(s: &str) -> Result<(Host, u16)> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok((Host::Ip(sa.ip()), sa.port()));
    }
    let bad = || anyhow!("`static` entry `{s}` is not `host:port` (like `db1.lab.test:5432` or `198.18.0.20:5432`)");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.contains(':') || host.is_empty() {
        return Err(bad());
    }
    Ok((Host::Name(fqdn(host)?), port))
}

/// Peers for each `[discover.NAME]` section of the loaded roles (settings already filled in),
/// as template data: `{ NAME: [ { host, address, port, priority, weight }, … ] }`. `persist`:
/// a real run records the last known good lists; a dry run writes nothing.
pub fn discover(cx: &Context, specs: &BTreeMap<String, toml::Table>, persist: bool) -> Result<serde_json::Value> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    discover_at(cx, specs, persist, now)
}

/// `discover` at `now` (seconds since the epoch): the clock is a parameter for tests.
pub fn discover_at(
    cx: &Context,
    specs: &BTreeMap<String, toml::Table>,
    persist: bool,
    now: u64,
) -> Result<serde_json::Value> {
    let specs: Vec<(&String, Spec)> = specs
        .iter()
        .map(|(name, t)| Ok((name, Spec::parse(t.clone()).map_err(|e| anyhow!("`[discover.{name}]`: {e:#}"))?)))
        .collect::<Result<_>>()?;
    if specs.is_empty() {
        return Ok(serde_json::json!({}));
    }
    let observations = dns_client::block_on(join_all(specs.iter().map(|(_, spec)| observe_capped(spec))))?;

    let store = peers_store::load(cx);
    let mut next = peers_store::Store::new();
    let mut out = serde_json::Map::new();
    for ((name, spec), obs) in specs.iter().zip(observations) {
        let source = spec.source();
        let known = store.get(*name).filter(|k| k.source == source).map_or(&[][..], |k| &k.peers);
        if let Some(reason) = &obs.failed {
            let n = known.len();
            tracing::warn!(peers = %name, "discovery of `{name}` failed ({reason}); keeping the last known {n} peers");
        }
        let (merged, outside): (Vec<_>, Vec<_>) = peers_store::merge(known, &obs, now, spec.grace_secs)
            .into_iter()
            .partition(|k| spec.allows(&k.peer.address));
        for k in &outside {
            let (host, address) = (&k.peer.host, &k.peer.address);
            let nets: Vec<String> = spec.within.iter().map(ToString::to_string).collect();
            tracing::warn!(peers = %name, "peer {host} ({address}) of `{name}` left out: not in {}", nets.join(", "));
        }
        let kept = |k: &&KnownPeer| merged.iter().chain(&outside).any(|m| m.peer == k.peer);
        for gone in known.iter().filter(|k| !kept(k)) {
            let (host, address) = (&gone.peer.host, &gone.peer.address);
            tracing::info!(peers = %name, "peer {host} ({address}) of `{name}` dropped: absent from DNS for the grace period");
        }
        let peers: Vec<&Peer> = merged.iter().map(|k| &k.peer).collect();
        out.insert(name.to_string(), with_names(&peers)?);
        next.insert(name.to_string(), Known { source, peers: merged });
    }
    if persist && next != store {
        // Losing the record only weakens the next fallback; the run goes on.
        if let Err(e) = peers_store::save(cx, &next) {
            tracing::warn!("{e:#}");
        }
    }
    Ok(serde_json::Value::Object(out))
}

/// The peers as template data, each with a `name` that stays the same while the peer is in
/// the list (haproxy's server names: stats, logs and runtime commands refer to them): the host
/// without its final dot, with the address when the host has several; characters haproxy does
/// not take in a name become `_`.
fn with_names(peers: &[&Peer]) -> Result<serde_json::Value> {
    let mut list = Vec::with_capacity(peers.len());
    for p in peers {
        let host = p.host.trim_end_matches('.');
        let same_host = peers.iter().filter(|o| o.host == p.host).count();
        let same_address = peers.iter().filter(|o| o.host == p.host && o.address == p.address).count();
        let raw = if same_host == 1 {
            host.to_string()
        } else if host == p.address {
            format!("{host}_{}", p.port)
        } else if same_address == 1 {
            format!("{host}_{}", p.address)
        } else {
            format!("{host}_{}_{}", p.address, p.port)
        };
        let name: String =
            raw.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.:".contains(c) { c } else { '_' }).collect();
        let mut v = serde_json::to_value(p)?;
        v["name"] = serde_json::Value::String(name);
        list.push(v);
    }
    Ok(serde_json::Value::Array(list))
}

async fn observe_capped(spec: &Spec) -> Observation {
    match tokio::time::timeout(LOOKUP_CAP, observe(spec)).await {
        Ok(Ok(obs)) => obs,
        Ok(Err(e)) => Observation { failed: Some(format!("{e:#}")), ..Default::default() },
        Err(_) => Observation { failed: Some(format!("no answer within {LOOKUP_CAP:?}")), ..Default::default() },
    }
}

async fn observe(spec: &Spec) -> Result<Observation> {
    let mut obs = Observation::default();
    // (host, port, priority, weight) whose addresses are wanted.
    let mut targets: Vec<(Name, u16, u16, u16)> = Vec::new();
    for (host, port) in &spec.static_peers {
        match host {
            Host::Ip(ip) => obs.peers.push(peer(ip.to_string(), *ip, *port, 0, 0)),
            Host::Name(n) => targets.push((n.clone(), *port, 0, 0)),
        }
    }
    let needs_dns = spec.srv.is_some() || !targets.is_empty();
    if !needs_dns {
        return Ok(obs);
    }
    // A stopped server is known in one round trip, not after every retry's timeout.
    if !spec.servers.is_empty() {
        let probes = join_all(spec.servers.iter().map(|s| dns_client::probe(*s))).await;
        if probes.iter().all(Result::is_err) {
            let why: Vec<String> = probes.into_iter().filter_map(Result::err).map(|e| e.to_string()).collect();
            obs.failed = Some(why.join("; "));
            return Ok(obs);
        }
    }
    let resolver = resolver(&spec.servers)?;
    if let Some(srv) = &spec.srv {
        match resolver.srv_lookup(srv.clone()).await {
            Ok(lookup) => {
                for r in lookup.answers() {
                    // A target of "." means "no such service here" (RFC 2782).
                    if let RData::SRV(s) = &r.data {
                        if !s.target.is_root() {
                            targets.push((s.target.clone(), s.port, s.priority, s.weight));
                        }
                    }
                }
            }
            // The server answered that the name has no SRV records: a real answer, so the
            // known peers start their grace period (a decommissioned last node must leave).
            Err(e) if answered_empty(&e) => {}
            Err(e) => obs.failed = Some(format!("SRV lookup of {srv}: {e}")),
        }
    }
    let names: BTreeSet<&Name> = targets.iter().map(|t| &t.0).collect();
    let answers = join_all(names.iter().map(|n| resolver.lookup_ip((*n).clone()))).await;
    let mut addresses = BTreeMap::new();
    for (name, answer) in names.into_iter().zip(answers) {
        match answer {
            Ok(ips) => {
                addresses.insert(name, ips.iter().collect::<Vec<IpAddr>>());
            }
            Err(e) => {
                tracing::warn!(host = %name, error = %e, "cannot look up the addresses of a peer");
                obs.unresolved.insert(name.to_ascii());
            }
        }
    }
    let txt = match &spec.txt {
        Some(label) => published_txt(&resolver, label, addresses.keys().copied(), &mut obs).await,
        None => BTreeMap::new(),
    };
    for (name, port, priority, weight) in &targets {
        // A host whose TXT lookup failed is left to what was known of it.
        if spec.txt.is_some() && !txt.contains_key(name) {
            continue;
        }
        for ip in addresses.get(name).into_iter().flatten() {
            let mut p = peer(name.to_ascii(), *ip, *port, *priority, *weight);
            p.txt = txt.get(name).cloned().unwrap_or_default();
            obs.peers.push(p);
        }
    }
    Ok(obs)
}

/// The TXT strings each host publishes at `<label>.<host>` (a record's strings joined), by
/// host; a host whose lookup fails is unresolved, so what was known of it stays.
async fn published_txt<'a>(
    resolver: &TokioResolver,
    label: &Name,
    hosts: impl Iterator<Item = &'a Name>,
    obs: &mut Observation,
) -> BTreeMap<&'a Name, Vec<String>> {
    let hosts: Vec<&Name> = hosts.collect();
    let names: Vec<Option<Name>> = hosts.iter().map(|h| label.clone().append_domain(h).ok()).collect();
    let answers = join_all(names.iter().map(|n| async move {
        match n {
            Some(n) => Some(resolver.txt_lookup(n.clone()).await),
            None => None,
        }
    }))
    .await;
    let mut out = BTreeMap::new();
    for (host, answer) in hosts.into_iter().zip(answers) {
        let strings = match answer {
            Some(Ok(lookup)) => lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(t) => {
                        Some(t.txt_data.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect::<String>())
                    }
                    _ => None,
                })
                .collect(),
            Some(Err(e)) if answered_empty(&e) => Vec::new(),
            Some(Err(e)) => {
                tracing::warn!(host = %host, error = %e, "cannot look up the TXT records of a peer");
                obs.unresolved.insert(host.to_ascii());
                continue;
            }
            None => Vec::new(),
        };
        let mut strings: Vec<String> = strings;
        strings.sort();
        out.insert(host, strings);
    }
    out
}

/// An answer saying there are no such records (NOERROR with none, or NXDOMAIN), as opposed to
/// no answer, a refusal or a server failure.
fn answered_empty(e: &NetError) -> bool {
    matches!(e, NetError::Dns(DnsError::NoRecordsFound(n)) if matches!(n.response_code, ResponseCode::NoError | ResponseCode::NXDomain))
}

fn peer(host: String, ip: IpAddr, port: u16, priority: u16, weight: u16) -> Peer {
    Peer { host, address: ip.to_string(), port, priority, weight, txt: Vec::new() }
}

/// A resolver asking `servers` (or the system's), with short timeouts and no cache to outlive
/// the run.
fn resolver(servers: &[SocketAddr]) -> Result<TokioResolver> {
    let (config, mut opts) = if servers.is_empty() {
        system_conf::read_system_conf().map_err(|e| anyhow!("cannot read the system's resolver configuration: {e}"))?
    } else {
        let name_servers = servers
            .iter()
            .map(|sa| {
                let mut ns = NameServerConfig::udp_and_tcp(sa.ip());
                for c in &mut ns.connections {
                    c.port = sa.port();
                }
                ns
            })
            .collect();
        (ResolverConfig::from_parts(None, vec![], name_servers), ResolverOpts::default())
    };
    opts.timeout = dns_client::TIMEOUT;
    // hickory counts retries after the first try.
    opts.attempts = usize::from(dns_client::ATTEMPTS) - 1;
    opts.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
    let mut b = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
    *b.options_mut() = opts;
    b.build().map_err(|e| anyhow!("cannot set up the DNS resolver: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(host: &str, address: &str, port: u16) -> Peer {
        Peer { host: host.into(), address: address.into(), port, priority: 0, weight: 0, txt: Vec::new() }
    }

    fn names(peers: &[Peer]) -> Vec<String> {
        let refs: Vec<&Peer> = peers.iter().collect();
        with_names(&refs).unwrap().as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn server_names_follow_the_peer_not_its_position() {
        let all = [
            p("db1.lab.test.", "198.18.0.20", 5432),
            p("db2.lab.test.", "198.18.0.21", 5432),
            p("db3.lab.test.", "198.18.0.22", 5432),
        ];
        assert_eq!(names(&all), ["db1.lab.test", "db2.lab.test", "db3.lab.test"]);
        // db2 leaves: db3 keeps its name.
        assert_eq!(names(&[all[0].clone(), all[2].clone()]), ["db1.lab.test", "db3.lab.test"]);
        // One host with two addresses; a static address; one address on two ports.
        let mixed = [
            p("db1.lab.test.", "198.18.0.20", 5432),
            p("db1.lab.test.", "2001:db8::20", 5432),
            p("198.18.0.30", "198.18.0.30", 5432),
        ];
        assert_eq!(names(&mixed), ["db1.lab.test_198.18.0.20", "db1.lab.test_2001:db8::20", "198.18.0.30"]);
        let ports = [p("198.18.0.30", "198.18.0.30", 5432), p("198.18.0.30", "198.18.0.30", 5433)];
        assert_eq!(names(&ports), ["198.18.0.30_5432", "198.18.0.30_5433"]);
    }

    #[test]
    fn static_entries() {
        assert!(matches!(parse_static("198.18.0.20:5432"), Ok((Host::Ip(_), 5432))));
        assert!(matches!(parse_static("[2001:db8::20]:5432"), Ok((Host::Ip(_), 5432))));
        assert!(matches!(parse_static("db1.lab.test:5432"), Ok((Host::Name(_), 5432))));
        for bad in ["db1.lab.test", "db1:x", ":5432", "2001:db8::20:5432", "db1:70000"] {
            assert!(parse_static(bad).is_err(), "{bad}");
        }
    }
}
