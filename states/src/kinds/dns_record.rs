//! `dns_record`: this node's record in DNS, kept by RFC 2136 dynamic updates signed with TSIG
//! (hmac-sha256).
//!
//! ```toml
//! [[state]]
//! id = "dns-a"
//! type = "dns_record"
//! server = "198.18.0.1:53"          # the zone's primary (port 53 if left out)
//! zone = "lab.test"
//! name = "app1"                     # relative to the zone, or absolute (`app1.lab.test.`)
//! record_type = "A"                 # A, AAAA or SRV (`type` is the state's own type)
//! value = "{{facts.addresses.[0]}}" # SRV: "priority weight port target"
//! ttl = 60                          # default 60
//! tsig_key_name = "lab-update"
//! tsig_secret = "dns_tsig"          # the NAME of the secret holding the base64 key
//! absent = false                    # true: make sure this record is gone
//! ```
//!
//! Plan asks the server for the record set (a plain query, no side effects; the server must be
//! authoritative). A and AAAA: the node owns its name, so the set is replaced by exactly this
//! value (stale addresses go, TTL follows). SRV: many nodes register under one SRV name, so
//! this node's record is added and the others are left alone. `absent` deletes only this
//! exact record. The key is read from the secrets at apply time and goes nowhere but into
//! the signature.
//!
//! For `bootstrap decommission`: `deregistration` builds the same state with `absent` forced
//! on from a role's parameters, and `deregister` runs it.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Result};
use hickory_net::proto::rr::rdata::{A, AAAA, SRV};
use hickory_net::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use serde::Deserialize;

use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State, Thing};
use crate::sys::dns_client::{self, fqdn, parse_server};
use crate::engine::build::{params, Builder};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    server: String,
    zone: String,
    name: String,
    record_type: String,
    value: String,
    #[serde(default = "default_ttl")]
    ttl: u32,
    tsig_key_name: String,
    tsig_secret: String,
    #[serde(default)]
    absent: bool,
}

fn default_ttl() -> u32 {
    60
}

pub struct DnsRecordState {
    server: SocketAddr,
    zone: Name,
    name: Name,
    rdata: RData,
    ttl: u32,
    key_name: String,
    /// The name of the secret holding the key, never the key.
    secret_name: String,
    absent: bool,
}

/// DNS servers that did not answer in this run.
#[derive(Default)]
struct Unanswered(Mutex<BTreeSet<SocketAddr>>);

/// DNS servers that answered the probe in this run.
#[derive(Default)]
struct Probed(Mutex<BTreeSet<SocketAddr>>);

/// The planned update.
enum Op {
    /// Delete the name's RRset of this type, add the record (A/AAAA).
    Replace,
    /// Add the record beside the others (SRV).
    Add,
    /// Delete exactly this record.
    Remove,
}

pub fn build(t: toml::Table, b: &mut Builder) -> Result<Box<dyn State>> {
    Ok(Box::new(DnsRecordState::new(t, b.cx)?))
}

/// `name` relative to `zone` unless it ends with a dot or already ends in the zone.
fn owner_name(name: &str, zone: &Name) -> Result<Name> {
    let zone_text = zone.to_ascii();
    let zone_text = zone_text.trim_end_matches('.');
    if name.ends_with('.') || name == zone_text || name.ends_with(&format!(".{zone_text}")) {
        return fqdn(name);
    }
    Name::from_ascii(name)
        .and_then(|n| n.append_domain(zone))
        .map_err(|e| anyhow!("`name` `{name}` is not a domain name: {e}"))
}

fn parse_value(rtype: &str, value: &str, zone: &Name) -> Result<RData> {
    let value = value.trim();
    Ok(match rtype.to_ascii_uppercase().as_str() {
        "A" => {
            RData::A(A(value.parse::<Ipv4Addr>().map_err(|_| anyhow!("`value` `{value}` is not an IPv4 address"))?))
        }
        "AAAA" => RData::AAAA(AAAA(
            value.parse::<Ipv6Addr>().map_err(|_| anyhow!("`value` `{value}` is not an IPv6 address"))?,
        )),
        "SRV" => {
            let bad = || anyhow!("`value` `{value}` is not an SRV value like `0 0 443 app1` (priority weight port target)");
            let [p, w, port, target] = value.split_whitespace().collect::<Vec<_>>()[..] else { return Err(bad()) };
            let n = |s: &str| s.parse::<u16>().map_err(|_| bad());
            RData::SRV(SRV::new(n(p)?, n(w)?, n(port)?, owner_name(target, zone)?))
        }
        other => bail!("`record_type` `{other}` is not supported (A, AAAA or SRV)"),
    })
}

impl DnsRecordState {
    fn new(t: toml::Table, cx: &Context) -> Result<Self> {
        let p: Params = params(t)?;
        let server = parse_server(&p.server)?;
        let zone = fqdn(&p.zone)?;
        let name = owner_name(&p.name, &zone)?;
        if !zone.zone_of(&name) {
            bail!("`name` {name} is not inside `zone` {zone}");
        }
        let rdata = parse_value(&p.record_type, &p.value, &zone)?;
        // Checked now, so a bad key stops the run before anything changes; never quoted.
        let Some(secret) = cx.secrets.get(&p.tsig_secret) else {
            bail!("secret `{}` (the TSIG key for `tsig_secret`) is not set", p.tsig_secret);
        };
        dns_client::signer(&p.tsig_key_name, secret)?;
        Ok(DnsRecordState {
            server,
            zone,
            name,
            rdata,
            ttl: p.ttl,
            key_name: p.tsig_key_name,
            secret_name: p.tsig_secret,
            absent: p.absent,
        })
    }

    fn describe(&self) -> String {
        format!("{} {} {}", self.name, self.rdata.record_type(), self.rdata)
    }

    fn record(&self, ttl: u32, class: DNSClass) -> Record {
        let mut r = Record::from_rdata(self.name.clone(), ttl, self.rdata.clone());
        r.dns_class = class;
        r
    }
}

impl State for DnsRecordState {
    /// An A or AAAA state replaces its name's set of that type; an SRV state adds one record
    /// beside other nodes' records.
    fn claims(&self) -> Vec<Claim> {
        let rtype = self.rdata.record_type();
        let what = match rtype {
            RecordType::SRV => self.describe(),
            _ => format!("{} {rtype}", self.name),
        };
        vec![Claim::new(Thing::Record(what))]
    }

    fn target(&self) -> String {
        format!("{} @{}", self.describe(), self.server)
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        let rtype = self.rdata.record_type();
        // A server that did not answer earlier in this run fails the next record at once: a
        // dead server costs one timeout per run, not one per record. (Both sets are
        // observations: after a change, a firewall opened, the server is asked again.)
        let unanswered = cx.shared.observe(|| Ok(Unanswered::default()))?;
        if unanswered.0.lock().unwrap().contains(&self.server) {
            bail!("no answer from the DNS server {} earlier in this run", self.server);
        }
        // One probe per server and run: a stopped server is known in one round trip (and named
        // as refused), without a probe before every record.
        let probed = cx.shared.observe(|| Ok(Probed::default()))?;
        if !probed.0.lock().unwrap().contains(&self.server) {
            if let Err(e) = dns_client::block_on(dns_client::probe(self.server))? {
                unanswered.0.lock().unwrap().insert(self.server);
                return Err(e.into());
            }
            probed.0.lock().unwrap().insert(self.server);
        }
        let have = dns_client::query(self.server, &self.name, rtype).inspect_err(|e| {
            if e.downcast_ref::<dns_client::NoAnswer>().is_some() {
                unanswered.0.lock().unwrap().insert(self.server);
            }
        })?;
        let present = have.iter().any(|r| r.data == self.rdata);
        let others: Vec<String> = have.iter().filter(|r| r.data != self.rdata).map(|r| r.data.to_string()).collect();
        let mut plan = Plan::default();
        let desc = self.describe();
        match (self.absent, rtype) {
            (true, _) if present => plan.push(Change::new(format!("deregister {desc}"), Op::Remove)),
            (true, _) => {}
            (false, RecordType::SRV) if !present => plan.push(Change::new(format!("register {desc}"), Op::Add)),
            (false, RecordType::SRV) => {}
            (false, _) if !present && others.is_empty() => {
                plan.push(Change::new(format!("register {desc}"), Op::Replace))
            }
            (false, _) if !present => {
                plan.push(Change::new(format!("register {desc} (replacing {})", others.join(", ")), Op::Replace))
            }
            (false, _) if !others.is_empty() => {
                plan.push(Change::new(format!("remove {} beside {desc}", others.join(", ")), Op::Replace))
            }
            (false, _) => {
                if let Some(r) = have.iter().find(|r| r.ttl != self.ttl) {
                    plan.push(Change::new(
                        format!("set the TTL of {desc} to {} (is {})", self.ttl, r.ttl),
                        Op::Replace,
                    ));
                }
            }
        }
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        let Some(op) = plan.ops::<Op>().next() else { return Ok(()) };
        let secret =
            cx.secrets.get(&self.secret_name).ok_or_else(|| anyhow!("secret `{}` is not set", self.secret_name))?;
        let signer = dns_client::signer(&self.key_name, secret)?;
        let updates = match op {
            Op::Replace => {
                // Delete the RRset (class ANY, RFC 2136 2.5.2), then add: one message, applied
                // atomically by the server.
                let mut delete = Record::update0(self.name.clone(), 0, self.rdata.record_type());
                delete.dns_class = DNSClass::ANY;
                vec![delete, self.record(self.ttl, DNSClass::IN)]
            }
            Op::Add => vec![self.record(self.ttl, DNSClass::IN)],
            // Class NONE, TTL 0: delete exactly this record (RFC 2136 2.5.4).
            Op::Remove => vec![self.record(0, DNSClass::NONE)],
        };
        dns_client::update(self.server, &self.zone, updates, signer)
    }
}
