//! The site bundle as a file: one tar archive holding `bundle.toml` (its serial), the
//! operator's `site.toml`, and their roles (`roles/*.toml`, templates in `roles/templates/`),
//! signed as a whole by a detached minisign signature beside it (`URL.minisig`).
//!
//! Unpacking trusts nothing but the signature already checked: regular files only, relative
//! paths inside the layout above, no links, bounded sizes.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};

/// The most a bundle may unpack to, and hold files.
pub const MAX_BYTES: u64 = 16 << 20;
const MAX_FILES: usize = 2000;

/// `bundle.toml`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Only grows: a node refuses a bundle older than the one it applied.
    pub serial: u64,
}

/// Pack the operator's directory: `site.toml`, `roles/*.toml`, `templates/*` (their own
/// templates, overriding embedded ones by name).
pub fn pack(dir: &Path, serial: u64) -> Result<Vec<u8>> {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let manifest = toml::to_string(&Manifest { serial })?;
    files.push(("bundle.toml".into(), manifest.into_bytes()));
    let site = dir.join("site.toml");
    if site.exists() {
        let text = std::fs::read_to_string(&site).with_context(|| format!("cannot read {}", site.display()))?;
        toml::from_str::<toml::Table>(&text).map_err(|e| anyhow!("{}: {e}", site.display()))?;
        files.push(("site.toml".into(), text.into_bytes()));
    }
    for (sub, into, ext) in [("roles", "roles", Some("toml")), ("templates", "roles/templates", None)] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
        let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
        names.sort();
        for p in names {
            let name =
                p.file_name().and_then(|n| n.to_str()).ok_or_else(|| anyhow!("{}: not a UTF-8 name", p.display()))?;
            if ext.is_some_and(|x| p.extension().and_then(|e| e.to_str()) != Some(x)) {
                continue;
            }
            let bytes = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
            if ext.is_some() {
                let text = String::from_utf8(bytes.clone()).map_err(|_| anyhow!("{}: not UTF-8", p.display()))?;
                toml::from_str::<toml::Table>(&text).map_err(|e| anyhow!("{}: {e}", p.display()))?;
            }
            files.push((format!("{into}/{name}"), bytes));
        }
    }
    let mut tar = tar::Builder::new(Vec::new());
    for (name, bytes) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, &name, bytes.as_slice())?;
    }
    Ok(tar.into_inner()?)
}

/// Unpack `archive` into `dest` (which must not exist); returns its manifest.
pub fn unpack(archive: &[u8], dest: &Path) -> Result<Manifest> {
    std::fs::create_dir(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    std::fs::create_dir_all(dest.join("roles/templates"))?;
    let mut tar = tar::Archive::new(archive);
    let (mut total, mut count, mut manifest) = (0u64, 0usize, None);
    for entry in tar.entries().context("the bundle is not a tar archive")? {
        let mut entry = entry.context("the bundle is not a readable tar archive (truncated?)")?;
        let path = entry.path()?.into_owned();
        let name = path.display().to_string();
        if entry.header().entry_type() != tar::EntryType::Regular {
            bail!("the bundle holds `{name}`, which is not a regular file");
        }
        if !allowed(&path) {
            bail!("the bundle holds `{name}`, outside site.toml, roles/*.toml and roles/templates/");
        }
        count += 1;
        total += entry.size();
        if count > MAX_FILES || total > MAX_BYTES {
            bail!("the bundle is larger than allowed ({MAX_FILES} files, {MAX_BYTES} bytes)");
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).context("the bundle is truncated")?;
        if name == "bundle.toml" {
            let text = String::from_utf8(bytes.clone()).map_err(|_| anyhow!("bundle.toml is not UTF-8"))?;
            manifest = Some(toml::from_str::<Manifest>(&text).map_err(|e| anyhow!("bundle.toml: {e}"))?);
        }
        std::fs::write(dest.join(&path), bytes)?;
    }
    manifest.ok_or_else(|| anyhow!("the bundle has no bundle.toml"))
}

fn allowed(path: &Path) -> bool {
    let parts: Vec<&str> = path
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str().unwrap_or("/"),
            _ => "/",
        })
        .collect();
    let plain = |s: &str| !s.is_empty() && !s.contains('/') && !s.starts_with('.');
    match parts.as_slice() {
        ["bundle.toml"] | ["site.toml"] => true,
        ["roles", f] => plain(f) && f.ends_with(".toml"),
        ["roles", "templates", f] => plain(f),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_unpacks_the_layout_and_refuses_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("site.toml"), "site_name = \"shop\"\n").unwrap();
        std::fs::create_dir_all(dir.path().join("roles")).unwrap();
        std::fs::create_dir_all(dir.path().join("templates")).unwrap();
        std::fs::write(dir.path().join("roles/shop.toml"), "includes = [\"app\"]\n").unwrap();
        std::fs::write(dir.path().join("roles/notes.txt"), "not a role").unwrap();
        std::fs::write(dir.path().join("templates/motd.hbs"), "hi\n").unwrap();
        let bytes = pack(dir.path(), 7).unwrap();
        assert_eq!(bytes, pack(dir.path(), 7).unwrap(), "packing is reproducible");
        let out = tempfile::tempdir().unwrap();
        let m = unpack(&bytes, &out.path().join("b")).unwrap();
        assert_eq!(m.serial, 7);
        assert!(out.path().join("b/roles/shop.toml").is_file());
        assert!(out.path().join("b/roles/templates/motd.hbs").is_file());
        assert!(!out.path().join("b/roles/notes.txt").exists());
        // Truncated: refused.
        assert!(unpack(&bytes[..bytes.len() / 2], &out.path().join("c")).is_err());
        for bad in ["../etc/passwd", "roles/../../x.toml", "/etc/x", "roles/sub/x.toml", "other.txt"] {
            assert!(!allowed(Path::new(bad)), "{bad}");
        }
    }
}
