//! What the firewall lets in: the role's parameters (`allow`, `extra`, `ssh_from`) turned
//! into the one table the tool owns, and the refusal of any table that would shut out SSH.
//!
//! The input chain drops by default and accepts: established/related traffic, loopback, the
//! ICMP/ICMPv6 types a host needs (errors, echo, neighbour discovery), DHCPv6 replies (a
//! host with a DHCPv6 lease loses its address without them; DHCPv4 uses raw sockets and
//! needs no rule), SSH on every port sshd is configured for, then the role's rules in order.
//!
//! There is no output chain (accepting everything is the kernel's default) and no forward
//! chain: in nftables a drop by any base chain is final, so a forward chain of ours with a drop
//! policy would break Docker, libvirt and every other router on the host.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use ipnet::IpNet;
use serde::Deserialize;

use crate::engine::build::params;
use crate::engine::facts::SshSession;
use crate::sys::nft::{parse_net, Base, Chain, Match, Proto, Rule, Table, Verdict};

const ICMP: &[&str] = &["echo-request", "destination-unreachable", "time-exceeded", "parameter-problem"];
const ICMPV6: &[&str] = &[
    "echo-request",
    "destination-unreachable",
    "packet-too-big",
    "time-exceeded",
    "parameter-problem",
    "nd-router-solicit",
    "nd-router-advert",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
];
const USAGE: &str =
    "expected `[tcp|udp/]PORT[-PORT] [from CIDR[, CIDR…]]` or `vrrp [from CIDR…]`, e.g. `tcp/8080 from 10.0.0.0/8`";

/// Protocols without ports a rule may name (keepalived's VRRP, IP protocol 112).
const PORTLESS: &[&str] = &["vrrp"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    allow: Vec<Allow>,
    /// Rules as strings in the small grammar of `USAGE`, so a site setting (a list of
    /// strings) can be passed straight through.
    #[serde(default)]
    extra: Vec<String>,
    /// Where SSH is allowed from; absent means anywhere.
    ssh_from: Option<Vec<String>>,
    /// Seconds after which an unconfirmed new table is rolled back.
    #[serde(default = "default_rollback")]
    rollback_seconds: u64,
}

fn default_rollback() -> u64 {
    90
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Allow {
    /// `443` or `"8000-8100"`.
    port: toml::Value,
    #[serde(default)]
    proto: Option<String>,
    /// A CIDR or a list of them; absent means anywhere.
    from: Option<toml::Value>,
}

/// One thing to let in.
#[derive(Clone, Debug)]
pub struct Entry {
    pub what: What,
    /// `None`: from anywhere.
    pub from: Option<Vec<IpNet>>,
    /// Where it came from (`allow[1]`, `extra[0]`), shown as the rule's comment.
    pub label: String,
}

/// What an entry lets in.
#[derive(Clone, Debug)]
pub enum What {
    Ports(Proto, (u16, u16)),
    /// A protocol without ports (one of `PORTLESS`).
    Protocol(&'static str),
}

/// The parsed parameters.
#[derive(Clone, Debug)]
pub struct Spec {
    pub ssh_from: Option<Vec<IpNet>>,
    pub entries: Vec<Entry>,
    pub rollback: Duration,
}

pub fn spec(t: toml::Table) -> Result<Spec> {
    let p: Params = params(t)?;
    let mut entries = Vec::new();
    for (i, a) in p.allow.into_iter().enumerate() {
        entries.push(allow(a, i).with_context(|| format!("`allow[{i}]`"))?);
    }
    for (i, s) in p.extra.iter().enumerate() {
        let mut e = parse_extra(s).with_context(|| format!("`extra[{i}]` = {s:?}"))?;
        e.label = format!("extra[{i}] {}", e.label);
        entries.push(e);
    }
    let ssh_from = p.ssh_from.map(|v| v.iter().map(|s| parse_net(s)).collect::<Result<Vec<_>>>()).transpose().context("`ssh_from`")?;
    if !(10..=3600).contains(&p.rollback_seconds) {
        bail!("`rollback_seconds` must be 10-3600, not {}", p.rollback_seconds);
    }
    Ok(Spec { ssh_from, entries, rollback: Duration::from_secs(p.rollback_seconds) })
}

fn allow(a: Allow, i: usize) -> Result<Entry> {
    let proto = match a.proto.as_deref() {
        None | Some("tcp") => Proto::Tcp,
        Some("udp") => Proto::Udp,
        Some(other) => bail!("`proto` must be `tcp` or `udp`, not `{other}`"),
    };
    let ports = match &a.port {
        toml::Value::Integer(n) => {
            let p = u16::try_from(*n).ok().filter(|p| *p > 0).ok_or_else(|| anyhow!("`port` {n} is not in 1-65535"))?;
            (p, p)
        }
        toml::Value::String(s) => port_range(s)?,
        other => bail!("`port` must be a number or a range like \"8000-8100\", not {}", other.type_str()),
    };
    let from = match a.from {
        None => None,
        Some(toml::Value::String(s)) => Some(vec![parse_net(&s)?]),
        Some(toml::Value::Array(v)) => {
            let nets = v
                .iter()
                .map(|x| x.as_str().ok_or_else(|| anyhow!("`from` must list CIDRs as strings")).and_then(parse_net))
                .collect::<Result<Vec<_>>>()?;
            if nets.is_empty() {
                bail!("`from` is empty, so this rule would let nothing in; omit `from` to allow from anywhere");
            }
            Some(nets)
        }
        Some(other) => bail!("`from` must be a CIDR or a list of them, not {}", other.type_str()),
    };
    Ok(Entry { what: What::Ports(proto, ports), from, label: format!("allow[{i}] {}", show(proto, ports)) })
}

fn show(proto: Proto, (lo, hi): (u16, u16)) -> String {
    if lo == hi {
        format!("{}/{lo}", proto.name())
    } else {
        format!("{}/{lo}-{hi}", proto.name())
    }
}

fn port_range(s: &str) -> Result<(u16, u16)> {
    let one = |p: &str| p.trim().parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| anyhow!("port `{p}` is not a number in 1-65535"));
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => (one(s)?, one(s)?),
    };
    if lo > hi {
        bail!("port range `{s}` is backwards");
    }
    Ok((lo, hi))
}

/// `[tcp|udp/]PORT[-PORT] [from CIDR[, CIDR…]]`; CIDRs are separated by commas and/or spaces.
pub fn parse_extra(s: &str) -> Result<Entry> {
    let words: Vec<&str> = s.split(|c: char| c.is_whitespace() || c == ',').filter(|w| !w.is_empty()).collect();
    let Some((head, rest)) = words.split_first() else { bail!("empty rule; {USAGE}") };
    let what = match head.split_once('/') {
        _ if PORTLESS.contains(head) => What::Protocol(PORTLESS.iter().find(|p| *p == head).unwrap()),
        Some(("tcp", p)) => What::Ports(Proto::Tcp, port_range(p).with_context(|| USAGE)?),
        Some(("udp", p)) => What::Ports(Proto::Udp, port_range(p).with_context(|| USAGE)?),
        Some((other, _)) => bail!("unknown protocol `{other}` (tcp or udp); {USAGE}"),
        None => What::Ports(Proto::Tcp, port_range(head).with_context(|| USAGE)?),
    };
    let from = match rest {
        [] => None,
        ["from"] => bail!("`from` needs at least one CIDR; {USAGE}"),
        ["from", nets @ ..] => Some(nets.iter().map(|n| parse_net(n)).collect::<Result<Vec<_>>>().with_context(|| USAGE)?),
        [other, ..] => bail!("unexpected `{other}`; {USAGE}"),
    };
    let label = match &what {
        What::Ports(proto, ports) => show(*proto, *ports),
        What::Protocol(p) => p.to_string(),
    };
    Ok(Entry { what, from, label })
}

fn accept(matches: Vec<Match>, comment: &str) -> Rule {
    Rule { matches, verdict: Some(Verdict::Accept), comment: Some(comment.to_string()) }
}

/// The rules for `e`: one per address family it names (an nft set holds one family).
fn rules_for(e: &Entry) -> Vec<Rule> {
    let dport = match &e.what {
        What::Ports(proto, ports) => Match::Dport(*proto, vec![*ports]),
        What::Protocol(p) => Match::L4proto(p.to_string()),
    };
    match &e.from {
        None => vec![accept(vec![dport], &e.label)],
        Some(nets) => {
            let (v4, v6): (Vec<IpNet>, Vec<IpNet>) = nets.iter().partition(|n| matches!(n, IpNet::V4(_)));
            [v4, v6]
                .into_iter()
                .filter(|s| !s.is_empty())
                .map(|s| accept(vec![Match::saddr(&s), dport.clone()], &e.label))
                .collect()
        }
    }
}

/// The table for `spec` with SSH on `ssh_ports`; refused if, as rendered, it would not let a
/// new SSH connection in on each of them from somewhere.
pub fn table(spec: &Spec, ssh_ports: &[u16]) -> Result<Table> {
    let mut rules = vec![
        Rule { matches: vec![Match::names(Match::CtState, &["established", "related"])], verdict: Some(Verdict::Accept), comment: None },
        Rule { matches: vec![Match::names(Match::CtState, &["invalid"])], verdict: Some(Verdict::Drop), comment: None },
        Rule { matches: vec![Match::Iifname("lo".into())], verdict: Some(Verdict::Accept), comment: None },
        accept(vec![Match::names(Match::IcmpType, ICMP)], "icmp"),
        accept(vec![Match::names(Match::Icmpv6Type, ICMPV6)], "icmpv6"),
        accept(
            vec![Match::saddr(&["fe80::/10".parse().unwrap()]), Match::Dport(Proto::Udp, vec![(546, 546)])],
            "dhcpv6 client",
        ),
    ];
    for &p in ssh_ports {
        let e = Entry { what: What::Ports(Proto::Tcp, (p, p)), from: spec.ssh_from.clone(), label: "ssh".into() };
        rules.extend(rules_for(&e));
    }
    for e in &spec.entries {
        rules.extend(rules_for(e));
    }
    let base = Base { kind: "filter".into(), hook: "input".into(), prio: 0, policy: "drop".into() };
    let table = Table { chains: vec![Chain { name: "input".into(), base: Some(base), rules }], others: Vec::new() };
    // Checked on the table itself, not on the inputs: whatever produced it, it must admit SSH.
    for &p in ssh_ports {
        if !table.admits_new_tcp(p) {
            let why = match &spec.ssh_from {
                Some(v) if v.is_empty() => " (`ssh_from` is empty)",
                _ => "",
            };
            bail!("refused: this firewall would not let SSH in on tcp/{p} (sshd's configured port){why}; nothing was changed");
        }
    }
    Ok(table)
}

/// Refuses `ssh_from` networks that leave out the SSH session this run came from, naming its
/// address family when `ssh_from` names none of that family. A run from cron has no session.
/// `own`: the run's own session; otherwise another open one, kept because the run's own
/// variable named a connection that is gone.
/// Whatever `ssh_from` says, a session the table still admits (by another rule: the storage
/// role's SFTP from `private_cidr`) is kept.
pub fn keeps_session(spec: &Spec, table: &Table, s: &SshSession, own: bool, ssh_ports: &[u16]) -> Result<()> {
    let which = if own { "this SSH session" } else { "an open SSH session (this run's SSH_CONNECTION is stale: tmux?)" };
    if s.client.is_loopback() || table.admits_new_tcp_from(s.client, s.port) {
        return Ok(());
    }
    if !ssh_ports.contains(&s.port) {
        let ports: Vec<String> = ssh_ports.iter().map(ToString::to_string).collect();
        bail!(
            "refused: {which} came in on tcp/{}, which sshd's configuration does not name (it names {}): the table would not let it in again; nothing was changed",
            s.port,
            ports.join(", ")
        );
    }
    let Some(nets) = &spec.ssh_from else { return Ok(()) };
    if s.client.is_loopback() {
        return Ok(());
    }
    if nets.iter().any(|n| n.contains(&s.client)) {
        return Ok(());
    }
    let family = if s.client.is_ipv6() { "IPv6" } else { "IPv4" };
    let listed: Vec<String> = nets.iter().map(ToString::to_string).collect();
    let why = if nets.iter().any(|n| n.addr().is_ipv6() == s.client.is_ipv6()) {
        String::new()
    } else {
        format!("; it names no {family} network, so SSH over {family} would be shut out")
    };
    bail!(
        "refused: `ssh_from` ({}) would shut out {which}, from {} on tcp/{}{why}; add its network to `ssh_from`, or run from an address it allows; nothing was changed",
        listed.join(", "),
        s.client,
        s.port
    )
}

/// The address families `ssh_from` leaves out entirely (SSH over them is dropped).
pub fn shut_out_families(spec: &Spec) -> Vec<&'static str> {
    let Some(nets) = &spec.ssh_from else { return Vec::new() };
    if nets.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    if !nets.iter().any(|n| n.addr().is_ipv4()) {
        out.push("IPv4");
    }
    if !nets.iter().any(|n| n.addr().is_ipv6()) {
        out.push("IPv6");
    }
    out
}
