//! Peer discovery: being written (issue 5). For now every `[discover.NAME]` yields its static
//! list or nothing.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::context::Context;

/// Peers for each `[discover.NAME]` section of the loaded roles (settings already filled in),
/// as template data: `{ NAME: [ { host, address, port }, … ] }`. `persist`: a real run may
/// record the last known good lists; a dry run writes nothing.
pub fn discover(_cx: &Context, specs: &BTreeMap<String, toml::Table>, _persist: bool) -> Result<serde_json::Value> {
    let mut out = serde_json::Map::new();
    for name in specs.keys() {
        out.insert(name.clone(), serde_json::Value::Array(Vec::new()));
    }
    Ok(serde_json::Value::Object(out))
}
