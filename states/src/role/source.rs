//! Where role files and templates come from: the roles embedded in the binary, or a
//! directory of the operator's.

use std::path::PathBuf;

use anyhow::{anyhow, Result};

/// Where role files and templates come from. Paths are relative: `app.toml`,
/// `templates/motd.hbs`. `Ok(None)`: not there; an error: there, but unreadable (which must
/// stop the run, not fall through to an embedded file of the same name).
pub trait RoleSource {
    fn read(&self, file: &str) -> Result<Option<String>>;
    /// How `file` is named in messages.
    fn label(&self, file: &str) -> String;
    /// The role names on offer (`*.toml` files).
    fn role_names(&self) -> Vec<String>;
    /// `read` and `label` in one lookup.
    fn read_labeled(&self, file: &str) -> Result<Option<(String, String)>> {
        Ok(self.read(file)?.map(|text| (text, self.label(file))))
    }
}

/// Roles from a directory, for people who fork their own.
pub struct DirSource(pub PathBuf);

impl RoleSource for DirSource {
    fn read(&self, file: &str) -> Result<Option<String>> {
        let path = self.0.join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    fn label(&self, file: &str) -> String {
        self.0.join(file).display().to_string()
    }

    fn role_names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".toml").map(str::to_string))
            .collect();
        v.sort();
        v
    }
}

/// Roles compiled into the binary: (relative path, text) pairs.
pub struct EmbeddedSource(pub &'static [(&'static str, &'static str)]);

impl RoleSource for EmbeddedSource {
    fn read(&self, file: &str) -> Result<Option<String>> {
        Ok(self.0.iter().find(|(p, _)| *p == file).map(|(_, t)| t.to_string()))
    }

    fn label(&self, file: &str) -> String {
        format!("roles/{file} (embedded)")
    }

    fn role_names(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(p, _)| !p.contains('/'))
            .filter_map(|(p, _)| p.strip_suffix(".toml").map(str::to_string))
            .collect()
    }
}

/// Sources in order, the first that has a file wins: the operator's roles (a site bundle or
/// `--roles DIR`) over the embedded ones, so a site role `includes = ["app"]` instead of forking
/// it, and a site template overrides an embedded one of the same name.
pub struct Layered(pub Vec<Box<dyn RoleSource>>);

impl RoleSource for Layered {
    fn read(&self, file: &str) -> Result<Option<String>> {
        Ok(self.read_labeled(file)?.map(|(text, _)| text))
    }

    fn label(&self, file: &str) -> String {
        match self.read_labeled(file) {
            Ok(Some((_, label))) => label,
            _ => self.0.first().map_or_else(|| file.to_string(), |s| s.label(file)),
        }
    }

    fn read_labeled(&self, file: &str) -> Result<Option<(String, String)>> {
        for s in &self.0 {
            if let Some(found) = s.read_labeled(file)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    fn role_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.0.iter().flat_map(|s| s.role_names()).collect();
        v.sort();
        v.dedup();
        v
    }
}
