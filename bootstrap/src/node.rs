//! `/etc/bootstrap/node.toml`: the roles this node was installed with, and the roles directory
//! when the operator forked their own (`--roles DIR`), so scheduled runs use the same.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _, Result};
use serde::{Deserialize, Serialize};

use states::engine::layout::Layout;
pub use states::engine::layout::NODE_FILE;

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub roles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles_dir: Option<PathBuf>,
    /// The signed site bundle the node follows: its URL and the operator's public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_key: Option<String>,
}

/// The recorded node, or `None` when it has not been installed.
pub fn load(root: &Path) -> Result<Option<NodeFile>> {
    let path = Layout::new(root).node_file();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    Ok(Some(toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?))
}

pub fn recorded_roles(root: &Path) -> Result<Option<Vec<String>>> {
    Ok(load(root)?.map(|n| n.roles))
}

/// Record the node's roles (and roles directory, if not the embedded one).
pub fn store(root: &Path, node: &NodeFile) -> Result<()> {
    let path = Layout::new(root).node_file();
    let body = format!("# Roles of this node, written by bootstrap.\n{}", toml::to_string(node)?);
    states::engine::atomic::write_plain(&path, body.as_bytes(), 0o644)
}
