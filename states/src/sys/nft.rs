//! nftables as the firewall uses it: the one table the tool owns (`inet bootstrap`), modelled
//! as the few rule shapes it writes, rendered to `nft -f` text, and read back from
//! `nft -j list table` into the same model.
//!
//! Comparing models compares meaning, not text: handles, JSON key order, set element order,
//! `{ x }` versus `x`, and the kernel's merging of adjacent prefixes into ranges all vanish,
//! while anything the tool never writes (a foreign rule, a counter, a named set) is kept as
//! `Unknown` and so shows up as a difference.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::{anyhow, Context as _, Result};
use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};
use serde_json::Value;

pub const TABLE: &str = "inet bootstrap";

/// Prepended to a table definition, this makes one `nft -f` transaction replace the table
/// whether or not it exists (create it empty, delete it, define it), touching no other table.
pub const RESET: &str = "table inet bootstrap {}\ndelete table inet bootstrap\n";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// Sorted by name.
    pub chains: Vec<Chain>,
    /// Objects other than chains and rules (sets, maps, counters…): never ours.
    pub others: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    /// `None` for a regular chain (reached only by jumps).
    pub base: Option<Base>,
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base {
    pub kind: String,
    pub hook: String,
    pub prio: i64,
    pub policy: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub verdict: Option<Verdict>,
    pub comment: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One match of a rule, in canonical form (sets sorted, address sets aggregated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    CtState(BTreeSet<String>),
    Iifname(String),
    IcmpType(BTreeSet<String>),
    Icmpv6Type(BTreeSet<String>),
    /// Source addresses, all of one family (`ip saddr` or `ip6 saddr`).
    Saddr(Vec<IpNet>),
    /// Destination ports as inclusive ranges, sorted.
    Dport(Proto, Vec<(u16, u16)>),
    /// A transport protocol without ports, by name (`meta l4proto vrrp`).
    L4proto(String),
    /// An expression or statement the tool never writes, as compact JSON.
    Unknown(String),
}

impl Match {
    pub fn saddr(nets: &[IpNet]) -> Match {
        Match::Saddr(IpNet::aggregate(&nets.to_vec()))
    }

    pub fn names(kind: fn(BTreeSet<String>) -> Match, names: &[&str]) -> Match {
        kind(names.iter().map(|s| s.to_string()).collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

impl Table {
    /// The table definition as `nft -f` reads it (and as `nft list` would show it, roughly).
    pub fn render(&self) -> String {
        let mut s = format!("table {TABLE} {{\n");
        for (i, c) in self.chains.iter().enumerate() {
            if i > 0 {
                s.push('\n');
            }
            let _ = writeln!(s, "\tchain {} {{", c.name);
            if let Some(b) = &c.base {
                let _ = writeln!(s, "\t\ttype {} hook {} priority {}; policy {};", b.kind, b.hook, b.prio, b.policy);
            }
            for r in &c.rules {
                let _ = writeln!(s, "\t\t{}", r.render());
            }
            s.push_str("\t}\n");
        }
        for o in &self.others {
            let _ = writeln!(s, "\t# not written by bootstrap: {o}");
        }
        s.push_str("}\n");
        s
    }

    /// One file that replaces the table atomically when loaded with `nft -f`.
    pub fn script(&self) -> String {
        format!("{RESET}{}", self.render())
    }
}

impl Rule {
    pub fn render(&self) -> String {
        let mut parts: Vec<String> = self.matches.iter().map(Match::render).collect();
        match self.verdict {
            Some(Verdict::Accept) => parts.push("accept".into()),
            Some(Verdict::Drop) => parts.push("drop".into()),
            None => {}
        }
        if let Some(c) = &self.comment {
            // Our comments are generated from validated input; quotes can't be escaped in nft.
            parts.push(format!("comment \"{}\"", c.replace(['"', '\\', '\n'], "")));
        }
        parts.join(" ")
    }
}

fn braced(items: Vec<String>, sep: &str) -> String {
    if items.len() == 1 {
        items.into_iter().next().unwrap()
    } else {
        format!("{{ {} }}", items.join(sep))
    }
}

impl Match {
    fn render(&self) -> String {
        let names = |s: &BTreeSet<String>| braced(s.iter().cloned().collect(), ", ");
        match self {
            Match::CtState(s) => format!("ct state {}", s.iter().cloned().collect::<Vec<_>>().join(",")),
            Match::Iifname(n) => format!("iifname \"{n}\""),
            Match::IcmpType(s) => format!("icmp type {}", names(s)),
            Match::Icmpv6Type(s) => format!("icmpv6 type {}", names(s)),
            Match::Saddr(nets) => {
                let fam = if nets.first().is_some_and(|n| matches!(n, IpNet::V6(_))) { "ip6" } else { "ip" };
                format!("{fam} saddr {}", braced(nets.iter().map(ToString::to_string).collect(), ", "))
            }
            Match::Dport(p, ports) => {
                let one = |&(lo, hi): &(u16, u16)| if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") };
                format!("{} dport {}", p.name(), braced(ports.iter().map(one).collect(), ", "))
            }
            Match::L4proto(p) => format!("meta l4proto {p}"),
            Match::Unknown(json) => format!("<{json}>"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading back

/// The table from `nft -j list table inet bootstrap` output.
pub fn decode(json: &str) -> Result<Table> {
    let v: Value = serde_json::from_str(json).context("`nft -j` printed something that is not JSON")?;
    let items = v["nftables"].as_array().ok_or_else(|| anyhow!("`nft -j` output has no `nftables` list"))?;
    let mut t = Table::default();
    for item in items {
        let Some((kind, body)) = item.as_object().and_then(|o| o.iter().next()) else { continue };
        match kind.as_str() {
            "metainfo" | "table" => {}
            "chain" => {
                let name = str_of(&body["name"]).to_string();
                let base = body.get("hook").map(|h| Base {
                    kind: str_of(&body["type"]).into(),
                    hook: str_of(h).into(),
                    prio: body["prio"].as_i64().unwrap_or(i64::MIN),
                    policy: str_of(&body["policy"]).into(),
                });
                chain_mut(&mut t, &name).base = base;
            }
            "rule" => {
                let rule = decode_rule(body);
                chain_mut(&mut t, str_of(&body["chain"])).rules.push(rule);
            }
            other => t.others.push(format!("{other} {}", str_of(&body["name"]))),
        }
    }
    t.chains.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(t)
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

fn chain_mut<'a>(t: &'a mut Table, name: &str) -> &'a mut Chain {
    if let Some(i) = t.chains.iter().position(|c| c.name == name) {
        return &mut t.chains[i];
    }
    t.chains.push(Chain { name: name.to_string(), base: None, rules: Vec::new() });
    t.chains.last_mut().unwrap()
}

fn decode_rule(body: &Value) -> Rule {
    let mut rule = Rule { matches: Vec::new(), verdict: None, comment: body["comment"].as_str().map(str::to_string) };
    for e in body["expr"].as_array().map(Vec::as_slice).unwrap_or_default() {
        match e.as_object().and_then(|o| o.iter().next()) {
            Some((k, _)) if k == "accept" && rule.verdict.is_none() => rule.verdict = Some(Verdict::Accept),
            Some((k, _)) if k == "drop" && rule.verdict.is_none() => rule.verdict = Some(Verdict::Drop),
            Some((k, m)) if k == "match" => {
                rule.matches.push(decode_match(m).unwrap_or_else(|| Match::Unknown(e.to_string())))
            }
            _ => rule.matches.push(Match::Unknown(e.to_string())),
        }
    }
    rule
}

/// A `match` expression we write, or `None` for anything else (negations included).
fn decode_match(m: &Value) -> Option<Match> {
    if !matches!(m["op"].as_str(), Some("==" | "in")) {
        return None;
    }
    let (left, right) = (&m["left"], &m["right"]);
    if left["ct"]["key"] == "state" {
        return Some(Match::CtState(names(right)?));
    }
    if left["meta"]["key"] == "iifname" {
        return Some(Match::Iifname(right.as_str()?.to_string()));
    }
    if left["meta"]["key"] == "l4proto" {
        return Some(Match::L4proto(right.as_str()?.to_string()));
    }
    let p = &left["payload"];
    match (p["protocol"].as_str()?, p["field"].as_str()?) {
        ("icmp", "type") => Some(Match::IcmpType(names(right)?)),
        ("icmpv6", "type") => Some(Match::Icmpv6Type(names(right)?)),
        ("ip" | "ip6", "saddr") => Some(Match::saddr(&nets(right)?)),
        ("tcp", "dport") => Some(Match::Dport(Proto::Tcp, ports(right)?)),
        ("udp", "dport") => Some(Match::Dport(Proto::Udp, ports(right)?)),
        _ => None,
    }
}

/// The elements of a right-hand side: a scalar, a list, or `{"set": [...]}`.
fn elements(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) if o.contains_key("set") => elements(&o["set"]),
        other => vec![other],
    }
}

fn names(v: &Value) -> Option<BTreeSet<String>> {
    elements(v).into_iter().map(|e| e.as_str().map(str::to_string)).collect()
}

fn nets(v: &Value) -> Option<Vec<IpNet>> {
    let mut out = Vec::new();
    for e in elements(v) {
        if let Some(a) = e.as_str() {
            out.push(IpNet::from(a.parse::<IpAddr>().ok()?));
        } else if let Some(p) = e.get("prefix") {
            out.push(IpNet::new(p["addr"].as_str()?.parse().ok()?, u8::try_from(p["len"].as_u64()?).ok()?).ok()?);
        } else {
            let r = e.get("range")?.as_array()?;
            match (r.first()?.as_str()?.parse().ok()?, r.get(1)?.as_str()?.parse().ok()?) {
                (IpAddr::V4(a), IpAddr::V4(b)) => out.extend(Ipv4Subnets::new(a, b, 0).map(IpNet::V4)),
                (IpAddr::V6(a), IpAddr::V6(b)) => out.extend(Ipv6Subnets::new(a, b, 0).map(IpNet::V6)),
                _ => return None,
            }
        }
    }
    Some(out)
}

fn ports(v: &Value) -> Option<Vec<(u16, u16)>> {
    let port = |v: &Value| v.as_u64().and_then(|n| u16::try_from(n).ok());
    let mut out: Vec<(u16, u16)> = elements(v)
        .into_iter()
        .map(|e| match e.get("range").and_then(Value::as_array) {
            Some(r) => Some((port(r.first()?)?, port(r.get(1)?)?)),
            None => port(e).map(|p| (p, p)),
        })
        .collect::<Option<_>>()?;
    out.sort();
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// What the table lets in

/// How much of "a new TCP connection to port P from some remote host" (or from one given
/// address) a rule matches.
enum Reach {
    Never,
    Some,
    All,
    Unsure,
}

impl Rule {
    fn reach_new_tcp(&self, port: u16, from: Option<std::net::IpAddr>) -> Reach {
        let mut reach = Reach::All;
        for m in &self.matches {
            match m {
                Match::CtState(s) if !s.contains("new") => return Reach::Never,
                Match::CtState(_) => {}
                // Remote traffic never arrives on loopback.
                Match::Iifname(n) if n == "lo" => return Reach::Never,
                Match::Iifname(_) => reach = Reach::Some,
                Match::IcmpType(_) | Match::Icmpv6Type(_) | Match::L4proto(_) => return Reach::Never,
                Match::Saddr(n) if n.is_empty() => return Reach::Never,
                Match::Saddr(n) => match from {
                    Some(a) if n.iter().any(|net| net.contains(&a)) => {}
                    Some(_) => return Reach::Never,
                    None => reach = Reach::Some,
                },
                Match::Dport(Proto::Tcp, r) if r.iter().any(|&(lo, hi)| lo <= port && port <= hi) => {}
                Match::Dport(..) => return Reach::Never,
                Match::Unknown(_) => return Reach::Unsure,
            }
        }
        reach
    }
}

impl Table {
    /// Whether a new TCP connection to `port` from at least some remote address gets through
    /// every input base chain of this table (in nftables a drop by any base chain is final).
    pub fn admits_new_tcp(&self, port: u16) -> bool {
        self.admits(port, None)
    }

    /// Whether a new TCP connection to `port` from `from` gets through (as `admits_new_tcp`).
    pub fn admits_new_tcp_from(&self, from: std::net::IpAddr, port: u16) -> bool {
        self.admits(port, Some(from))
    }

    fn admits(&self, port: u16, from: Option<std::net::IpAddr>) -> bool {
        self.chains.iter().filter(|c| c.base.as_ref().is_some_and(|b| b.hook == "input")).all(|c| {
            for r in &c.rules {
                match (r.reach_new_tcp(port, from), r.verdict) {
                    (Reach::Some | Reach::All, Some(Verdict::Accept)) => return true,
                    (Reach::All | Reach::Unsure, Some(Verdict::Drop)) => return false,
                    _ => {}
                }
            }
            c.base.as_ref().is_some_and(|b| b.policy == "accept")
        })
    }
}

/// Whether `nft` output says the table does not exist.
pub fn is_absent(stderr: &str) -> bool {
    stderr.contains("No such file or directory")
}

/// A CIDR or bare address as a network, normalised (`10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse_net(s: &str) -> Result<IpNet> {
    let s = s.trim();
    let net = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => IpNet::from(s.parse::<IpAddr>().map_err(|_| anyhow!("`{s}` is not an IPv4/IPv6 address or CIDR"))?),
    };
    Ok(net.trunc())
}
