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
//! record_type = "A"                 # A, AAAA, TXT or SRV (`type` is the state's own type)
//! value = "{{facts.addresses.[0]}}" # SRV: "priority weight port target"
//! # value_file = "/etc/bootstrap/sshfs/id_ed25519.pub"  # instead of `value`: read when
//! #   planned (a key another state makes), trimmed
//! ttl = 60                          # default 60
//! tsig_key_name = "lab-update"
//! tsig_secret = "dns_tsig"          # the NAME of the secret holding the base64 key
//! absent = false                    # true: make sure this record is gone
//! # while_exists = "/var/lib/bootstrap/swarm-manager"  # registered only while this file
//! #   exists (a state observing the node's role keeps it), deregistered when it doesn't
//! ```
//!
//! Plan asks the server for the record set (a plain query, no side effects; the server must be
//! authoritative). A, AAAA and TXT: the node owns its name, so the set is replaced by exactly
//! this value (stale addresses or keys go, TTL follows). SRV: many nodes register under one SRV name, so
//! this node's record is added and the others are left alone. `absent` deletes exactly this
//! SRV record, or the whole set of a name the node owns (whatever value it holds now). A
//! `value_file` must be readable by everyone: a private file is never published. The key is read from the secrets at apply time and goes nowhere but into
//! the signature.
//!
//! For `bootstrap decommission`: `deregistration` builds the same state with `absent` forced
//! on from a role's parameters, and `deregister` runs it.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Result};
use hickory_net::proto::rr::rdata::{A, AAAA, SRV, TXT};
use hickory_net::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use serde::Deserialize;

use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State, Thing};
use crate::sys::dns_client::{self, fqdn, parse_server};
use crate::engine::build::{display, managed_path, params, Builder};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    server: String,
    zone: String,
    name: String,
    record_type: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    value_file: Option<PathBuf>,
    #[serde(default = "default_ttl")]
    ttl: u32,
    tsig_key_name: String,
    tsig_secret: String,
    #[serde(default)]
    absent: bool,
    /// Registered only while this file exists (a state that observes the role keeps it:
    /// `swarm_member`'s manager marker), removed when it does not.
    #[serde(default)]
    while_exists: Option<PathBuf>,
}

fn default_ttl() -> u32 {
    60
}

pub struct DnsRecordState {
    server: SocketAddr,
    zone: Name,
    name: Name,
    value: Value,
    ttl: u32,
    key_name: String,
    /// The name of the secret holding the key, never the key.
    secret_name: String,
    absent: bool,
    while_exists: Option<PathBuf>,
}

/// What the record holds.
enum Value {
    Given(RData),
    /// A TXT record of a file's content (trimmed), read when planned.
    File(PathBuf),
}

/// DNS servers that did not answer in this run.
#[derive(Default)]
struct Unanswered(Mutex<BTreeSet<SocketAddr>>);

/// DNS servers that answered the probe in this run.
#[derive(Default)]
struct Probed(Mutex<BTreeSet<SocketAddr>>);

/// The planned update, with the record it is about.
enum Op {
    /// Delete the name's RRset of this type, add the record (A/AAAA/TXT).
    Replace(RData),
    /// Add the record beside the others (SRV).
    Add(RData),
    /// Delete exactly this record.
    Remove(RData),
    /// Replace with the value file's content, which another state makes first.
    ReplaceFromFile,
    /// Delete the name's whole set of this type (a name the node owns, leaving).
    RemoveSet,
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
        "TXT" => txt(value)?,
        "SRV" => {
            let bad = || anyhow!("`value` `{value}` is not an SRV value like `0 0 443 app1` (priority weight port target)");
            let [p, w, port, target] = value.split_whitespace().collect::<Vec<_>>()[..] else { return Err(bad()) };
            let n = |s: &str| s.parse::<u16>().map_err(|_| bad());
            RData::SRV(SRV::new(n(p)?, n(w)?, n(port)?, owner_name(target, zone)?))
        }
        other => bail!("`record_type` `{other}` is not supported (A, AAAA, TXT or SRV)"),
    })
}

/// A TXT record of `value`, in strings of at most 255 bytes (RFC 1035 3.3.14).
fn txt(value: &str) -> Result<RData> {
    if value.is_empty() || value.chars().any(char::is_control) {
        bail!("a TXT value must be one line of text, not empty");
    }
    let mut chunks = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let mut end = rest.len().min(255);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        chunks.push(rest[..end].to_string());
        rest = &rest[end..];
    }
    Ok(RData::TXT(TXT::new(chunks)))
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
        let value = match (p.value, p.value_file) {
            (Some(v), None) => Value::Given(parse_value(&p.record_type, &v, &zone)?),
            (None, Some(f)) if p.record_type.eq_ignore_ascii_case("TXT") => Value::File(managed_path(&f)?),
            (None, Some(_)) => bail!("`value_file` is for TXT records"),
            (Some(_), Some(_)) => bail!("give `value` or `value_file`, not both"),
            (None, None) => bail!("a DNS record needs `value` (or `value_file` for TXT)"),
        };
        if p.while_exists.is_some() && !p.record_type.eq_ignore_ascii_case("SRV") {
            // The other types replace their whole set, which other nodes' values may share.
            bail!("`while_exists` is for SRV records (one node's record beside the others')");
        }
        // Checked now, so a bad key stops the run before anything changes; never quoted.
        let Some(secret) = cx.secrets.get(&p.tsig_secret) else {
            bail!("secret `{}` (the TSIG key for `tsig_secret`) is not set", p.tsig_secret);
        };
        dns_client::signer(&p.tsig_key_name, secret)?;
        Ok(DnsRecordState {
            server,
            zone,
            name,
            value,
            ttl: p.ttl,
            key_name: p.tsig_key_name,
            secret_name: p.tsig_secret,
            absent: p.absent,
            while_exists: p.while_exists.as_deref().map(managed_path).transpose()?,
        })
    }

    fn record_type(&self) -> RecordType {
        match &self.value {
            Value::Given(r) => r.record_type(),
            Value::File(_) => RecordType::TXT,
        }
    }

    fn describe(&self) -> String {
        match &self.value {
            Value::Given(r) => self.describe_with(r),
            Value::File(f) => format!("{} TXT (the content of {})", self.name, display(f)),
        }
    }

    fn describe_with(&self, rdata: &RData) -> String {
        format!("{} {} {rdata}", self.name, rdata.record_type())
    }

    /// The record as it should be; `None` while the value file is not made yet.
    fn rdata(&self, cx: &Context) -> Result<Option<RData>> {
        let path = match &self.value {
            Value::Given(r) => return Ok(Some(r.clone())),
            Value::File(path) => path,
        };
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(cx.path(path)) {
            Ok(m) if m.permissions().mode() & 0o004 == 0 => {
                bail!("{} is not readable by everyone: a private file is never published", display(path))
            }
            _ => {}
        }
        match std::fs::read_to_string(cx.path(path)) {
            Ok(text) => txt(text.trim()).map(Some).map_err(|e| anyhow!("{}: {e:#}", display(path))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow!("cannot read {}: {e}", display(path))),
        }
    }

    /// The name's records of `rtype` as the server has them. A server that did not answer
    /// earlier in this run fails the next record at once: a dead server costs one timeout per
    /// run, not one per record. (Both sets are observations: after a change, a firewall
    /// opened, the server is asked again.)
    fn observe(&self, cx: &Context, rtype: RecordType) -> Result<Vec<Record>> {
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
        dns_client::query(self.server, &self.name, rtype).inspect_err(|e| {
            if e.downcast_ref::<dns_client::NoAnswer>().is_some() {
                unanswered.0.lock().unwrap().insert(self.server);
            }
        })
    }

    /// The records of one dynamic update carrying out `op`.
    fn updates(&self, cx: &Context, op: &Op) -> Result<Vec<Record>> {
        Ok(match op {
            Op::Replace(rdata) => {
                // Delete the RRset (class ANY, RFC 2136 2.5.2), then add: one message, applied
                // atomically by the server.
                let mut delete = Record::update0(self.name.clone(), 0, rdata.record_type());
                delete.dns_class = DNSClass::ANY;
                vec![delete, self.record(rdata, self.ttl, DNSClass::IN)]
            }
            Op::Add(rdata) => vec![self.record(rdata, self.ttl, DNSClass::IN)],
            // Class NONE, TTL 0: delete exactly this record (RFC 2136 2.5.4).
            Op::Remove(rdata) => vec![self.record(rdata, 0, DNSClass::NONE)],
            Op::RemoveSet => {
                let mut delete = Record::update0(self.name.clone(), 0, self.record_type());
                delete.dns_class = DNSClass::ANY;
                vec![delete]
            }
            Op::ReplaceFromFile => match self.rdata(cx)? {
                Some(rdata) => self.updates(cx, &Op::Replace(rdata))?,
                None => bail!("{} is not there to register", self.describe()),
            },
        })
    }

    fn record(&self, rdata: &RData, ttl: u32, class: DNSClass) -> Record {
        let mut r = Record::from_rdata(self.name.clone(), ttl, rdata.clone());
        r.dns_class = class;
        r
    }
}

impl State for DnsRecordState {
    /// An A or AAAA state replaces its name's set of that type; an SRV state adds one record
    /// beside other nodes' records.
    fn claims(&self) -> Vec<Claim> {
        let rtype = self.record_type();
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
        let rtype = self.record_type();
        let absent = self.absent || self.while_exists.as_ref().is_some_and(|f| !cx.path(f).exists());
        // A name the node owns (not SRV) leaves DNS whole: every record of the type, whatever
        // value it held (a key made again, an old address), also with the value file gone.
        if absent && rtype != RecordType::SRV {
            let have = self.observe(cx, rtype)?;
            let mut plan = Plan::default();
            if !have.is_empty() {
                let values: Vec<String> = have.iter().map(|r| r.data.to_string()).collect();
                plan.push(Change::new(
                    format!("deregister {} {rtype} {}", self.name, values.join(", ")),
                    Op::RemoveSet,
                ));
            }
            return Ok(plan);
        }
        let Some(rdata) = self.rdata(cx)? else {
            // The value file is made by a state that runs first (a key generated at install).
            let mut plan = Plan::default();
            if !absent {
                plan.push(Change::new(format!("register {}, once it is made", self.describe()), Op::ReplaceFromFile));
            }
            return Ok(plan);
        };
        let have = self.observe(cx, rtype)?;
        let present = have.iter().any(|r| r.data == rdata);
        let others: Vec<String> = have.iter().filter(|r| r.data != rdata).map(|r| r.data.to_string()).collect();
        let mut plan = Plan::default();
        let desc = self.describe_with(&rdata);
        let replace = || Op::Replace(rdata.clone());
        match (absent, rtype) {
            (true, _) if present => plan.push(Change::new(format!("deregister {desc}"), Op::Remove(rdata.clone()))),
            (true, _) => {}
            (false, RecordType::SRV) if !present => {
                plan.push(Change::new(format!("register {desc}"), Op::Add(rdata.clone())))
            }
            (false, RecordType::SRV) => {}
            (false, _) if !present && others.is_empty() => plan.push(Change::new(format!("register {desc}"), replace())),
            (false, _) if !present => {
                plan.push(Change::new(format!("register {desc} (replacing {})", others.join(", ")), replace()))
            }
            (false, _) if !others.is_empty() => {
                plan.push(Change::new(format!("remove {} beside {desc}", others.join(", ")), replace()))
            }
            (false, _) => {
                if let Some(r) = have.iter().find(|r| r.ttl != self.ttl) {
                    plan.push(Change::new(format!("set the TTL of {desc} to {} (is {})", self.ttl, r.ttl), replace()));
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
        let updates = self.updates(cx, op)?;
        dns_client::update(self.server, &self.zone, updates, signer)
    }
}
