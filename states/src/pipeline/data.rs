//! The template data of a run, typed: what roles and templates may name (`facts.hostname`,
//! `settings.domain`, `node.private_address`, `peers.db`, `firewall`…). README lists it.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use crate::engine::facts::Facts;
use crate::role::params::resolve_params;
use crate::role::template::{Data, Templates};

#[derive(Clone, Debug, Serialize)]
pub struct TemplateData {
    pub facts: Facts,
    /// Every declared setting, unset ones as null (so `{{#if settings.x}}` works).
    pub settings: serde_json::Value,
    /// This node's roles.
    pub roles: Vec<String>,
    pub schedule: Schedule,
    pub node: NodeData,
    /// `role.db`: whether this node has each known role (every name present).
    pub role: BTreeMap<String, bool>,
    /// Discovered peers by `[discover.NAME]`: host, address, port, priority, weight.
    pub peers: serde_json::Value,
    /// The roles' firewall rules, settings filled in, then the site's `firewall_extra`.
    pub firewall: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Schedule {
    /// The five cron fields of the node's schedule.
    pub cron: String,
}

/// What the node is in the fleet.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeData {
    /// The node's address inside `private_cidr`: what it listens on and registers in DNS.
    pub private_address: Option<String>,
    /// `A` or `AAAA`, by the address's family.
    pub private_address_type: Option<&'static str>,
    /// The interface the private address is on (where a floating IP goes).
    pub private_interface: Option<String>,
    /// This node's VRRP priority (1-254): from its private address, so it is stable and, in a
    /// /24, distinct per node.
    pub vrrp_priority: u8,
    /// Whether this node is the site's `admin_node` (its hostname, or hostname.dns_zone);
    /// `None` when the site names none.
    pub authoritative: Option<bool>,
    /// Taken out of service by `bootstrap drain` (no floating IP, no SRV record) until undrained.
    pub drained: bool,
}

impl NodeData {
    /// The first of the node's addresses inside the `private_cidr` setting (none when unset),
    /// never the fleet's floating IP (which the node may hold for now).
    pub fn from(facts: &Facts, values: &toml::Table) -> NodeData {
        let setting = |name| values.get(name).and_then(|v| v.as_str());
        let net = setting("private_cidr").and_then(|c| c.parse::<ipnet::IpNet>().ok());
        let floating = setting("floating_ip").and_then(|c| c.parse::<ipnet::IpNet>().ok()).map(|n| n.addr());
        let found = net.and_then(|net| {
            facts
                .addresses
                .iter()
                .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
                .find(|ip| net.contains(ip) && Some(*ip) != floating)
        });
        let authoritative = setting("admin_node").filter(|a| !a.is_empty()).map(|a| {
            let a = a.trim_end_matches('.');
            let fqdn = setting("dns_zone").map(|z| format!("{}.{}", facts.hostname, z.trim_end_matches('.')));
            a == facts.hostname || Some(a.to_string()) == fqdn
        });
        let node = match found {
            Some(ip) => NodeData {
                private_address: Some(ip.to_string()),
                private_address_type: Some(if ip.is_ipv4() { "A" } else { "AAAA" }),
                private_interface: facts.interfaces.get(&ip.to_string()).cloned(),
                vrrp_priority: match ip {
                    std::net::IpAddr::V4(a) => a.octets()[3].clamp(1, 254),
                    std::net::IpAddr::V6(a) => (a.segments()[7] % 254 + 1) as u8,
                },
                authoritative: None,
                drained: false,
            },
            None => NodeData { vrrp_priority: 100, ..Default::default() },
        };
        NodeData { authoritative, ..node }
    }
}

impl TemplateData {
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("template data serializes")
    }
}

/// The roles' firewall rules (settings filled in; empty ones left out) followed by the site's
/// `firewall_extra`.
pub fn firewall_rules(from_roles: &[String], templates: &Templates, data: &Data) -> Result<Vec<String>> {
    let mut t = toml::Table::new();
    t.insert("firewall".into(), toml::Value::Array(from_roles.iter().cloned().map(toml::Value::String).collect()));
    let resolved = resolve_params(t, templates, data).map_err(|e| e.context("`firewall` rules in the roles"))?;
    let mut rules: Vec<String> = resolved["firewall"].clone().try_into()?;
    if let Some(extra) = data.value()["settings"]["firewall_extra"].as_array() {
        rules.extend(extra.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    Ok(rules)
}
