//! Where role files and templates come from: the roles embedded in the binary, or a
//! directory of the operator's.

use std::path::PathBuf;

/// Where role files and templates come from. Paths are relative: `app.toml`,
/// `templates/motd.hbs`.
pub trait RoleSource {
    fn read(&self, file: &str) -> Option<String>;
    /// How `file` is named in messages.
    fn label(&self, file: &str) -> String;
    /// The role names on offer (`*.toml` files).
    fn role_names(&self) -> Vec<String>;
}

/// Roles from a directory, for people who fork their own.
pub struct DirSource(pub PathBuf);

impl RoleSource for DirSource {
    fn read(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.0.join(file)).ok()
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
    fn read(&self, file: &str) -> Option<String> {
        self.0.iter().find(|(p, _)| *p == file).map(|(_, t)| t.to_string())
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
