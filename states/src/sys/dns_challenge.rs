//! ACME DNS-01 through the fleet's RFC 2136 server, with the TSIG key the node already has:
//! a `_acme-challenge.<name>` TXT record added (one per value, never replacing: several nodes
//! may validate one shared name at the same time), seen answered by the authoritative server
//! before the CA is told to look, and removed afterwards, also after a failure.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use hickory_net::proto::rr::rdata::TXT;
use hickory_net::proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::sys::dns_client::{self, fqdn};

/// How long the authoritative server may take to answer a published record.
const VISIBLE_WITHIN: Duration = Duration::from_secs(30);
const TTL: u32 = 60;

/// Where and how challenge records are published.
pub struct DnsSolver {
    pub server: SocketAddr,
    pub zone: Name,
    pub key_name: String,
    pub secret: String,
}

/// One published challenge record.
pub struct Published {
    pub name: Name,
    pub value: String,
}

impl DnsSolver {
    /// `_acme-challenge.<identifier>`, which must lie in the zone the key may update.
    pub fn record_name(&self, identifier: &str) -> Result<Name> {
        let name = fqdn(&format!("_acme-challenge.{}", identifier.trim_start_matches("*.")))?;
        if !self.zone.zone_of(&name) {
            bail!("DNS-01 for `{identifier}`: {name} is not inside the zone {} this node updates", self.zone);
        }
        Ok(name)
    }

    fn txt(name: &Name, value: &str, ttl: u32, class: DNSClass) -> Record {
        let mut r = Record::from_rdata(name.clone(), ttl, RData::TXT(TXT::new(vec![value.to_string()])));
        r.dns_class = class;
        r
    }

    fn send(&self, record: Record) -> Result<()> {
        let signer = dns_client::signer(&self.key_name, &self.secret)?;
        dns_client::update(self.server, &self.zone, vec![record], signer)
    }

    /// Add the record, then wait until the authoritative server answers it. On any error the
    /// record is withdrawn again (an update whose answer was lost may have landed; removing
    /// exactly this value is harmless when it did not).
    pub fn publish(&self, name: &Name, value: &str) -> Result<Published> {
        let published = Published { name: name.clone(), value: value.to_string() };
        let result = self.publish_and_wait(&published);
        if result.is_err() {
            if let Err(e) = self.withdraw(&published) {
                tracing::warn!("{e:#}");
            }
        }
        result.map(|()| published)
    }

    fn publish_and_wait(&self, p: &Published) -> Result<()> {
        let (name, value) = (&p.name, p.value.as_str());
        self.send(Self::txt(name, value, TTL, DNSClass::IN)).with_context(|| format!("publishing {name} TXT"))?;
        let start = Instant::now();
        loop {
            let answers = dns_client::query(self.server, name, RecordType::TXT)?;
            let seen = answers.iter().any(|r| match &r.data {
                RData::TXT(t) => t.txt_data.iter().any(|d| d.as_ref() == value.as_bytes()),
                _ => false,
            });
            if seen {
                return Ok(());
            }
            if start.elapsed() > VISIBLE_WITHIN {
                bail!("{} does not answer {name} TXT {VISIBLE_WITHIN:?} after the update", self.server);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Remove exactly this record (class NONE, RFC 2136 2.5.4): other nodes' values stay.
    pub fn withdraw(&self, p: &Published) -> Result<()> {
        self.send(Self::txt(&p.name, &p.value, 0, DNSClass::NONE)).with_context(|| format!("removing {} TXT", p.name))
    }
}
