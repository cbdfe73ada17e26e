//! Site settings: `--site FILE|URL` (a URL fetched over HTTPS, optionally pinned by sha256), or
//! the node's recorded `/etc/bootstrap/site.toml`, or none.

use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};

use states::engine::layout::Layout;

/// The site table and where it came from (for messages).
pub fn load(root: &Path, site: Option<&str>, pin: Option<&str>) -> Result<(toml::Table, String)> {
    let recorded = Layout::new(root).site_file();
    let (text, origin) = match site {
        Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
            // Unsigned settings from a server could open the firewall or move the pools: only
            // with the sha256 pinned (or signed, as a bundle with --site-key).
            let shown = states::sys::http::shown(url);
            if pin.is_none() {
                bail!("--site {shown}: settings from a server need --site-sha256 HEX (a one-off install) or a signed site bundle with --site-key");
            }
            let bytes = states::sys::http::get_body(url, std::time::Duration::from_secs(30), 1 << 20)?;
            (String::from_utf8(bytes).with_context(|| format!("{shown} is not UTF-8 text"))?, shown)
        }
        Some(p) => (std::fs::read_to_string(p).with_context(|| format!("cannot read {p}"))?, p.to_string()),
        None if recorded.exists() => (std::fs::read_to_string(&recorded)?, recorded.display().to_string()),
        None => return Ok((toml::Table::new(), "(no site settings)".into())),
    };
    if let Some(want) = pin {
        let have = states::engine::content::sha256_hex(text.as_bytes());
        if !have.eq_ignore_ascii_case(want) {
            bail!("{origin} has sha256 {have}, not the pinned {want}");
        }
    }
    let table = toml::from_str(&text).map_err(|e| anyhow!("{origin}: {e}"))?;
    Ok((table, origin))
}

/// Record the site settings on the node.
pub fn store(root: &Path, site: &toml::Table) -> Result<()> {
    let path = Layout::new(root).site_file();
    let body = format!("# Site settings of this node, written by bootstrap.\n{}", toml::to_string(site)?);
    states::engine::atomic::write_plain(&path, body.as_bytes(), 0o644)
}
