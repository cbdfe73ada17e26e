//! Site settings: `--site FILE`, or the node's recorded `/etc/bootstrap/site.toml`, or none.

use std::path::Path;

use anyhow::{anyhow, Context as _, Result};

pub const SITE_FILE: &str = "/etc/bootstrap/site.toml";

pub fn load(root: &Path, site: Option<&Path>) -> Result<toml::Table> {
    let recorded = root.join(SITE_FILE.trim_start_matches('/'));
    let path = match site {
        Some(p) => p.to_path_buf(),
        None if recorded.exists() => recorded,
        None => return Ok(toml::Table::new()),
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}
