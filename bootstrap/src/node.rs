//! `/etc/bootstrap/node.toml`: the roles this node was installed with.

use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use serde::Deserialize;

pub const NODE_FILE: &str = "/etc/bootstrap/node.toml";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    roles: Vec<String>,
}

/// The recorded roles, or `None` when the node has not been installed.
pub fn recorded_roles(root: &Path) -> Result<Option<Vec<String>>> {
    let path = root.join(NODE_FILE.trim_start_matches('/'));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let n: NodeFile = toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(Some(n.roles))
}
