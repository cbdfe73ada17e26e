//! The registry of state modules, and what their constructors share.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Result};
use serde::de::DeserializeOwned;

use crate::content::Content;
use crate::context::Context;
use crate::contract::State;
use crate::role::RoleSource;
use crate::template::Templates;
use crate::{
    absent, acme, certificate, cron, directory, dns_record, file, firewall, group, packages, postgres, service, symlink,
    sysctl, user,
};

/// What a module constructor may use: templates (loaded from the role source on demand) and
/// the template data.
pub struct Builder<'a> {
    pub cx: &'a Context,
    pub templates: &'a mut Templates,
    pub source: &'a dyn RoleSource,
    pub data: &'a serde_json::Value,
}

impl Builder<'_> {
    /// Render `templates/NAME` from the role source.
    pub fn render(&mut self, name: &str) -> Result<Content> {
        if !self.templates.has(name) {
            let file = format!("templates/{name}");
            let Some(text) = self.source.read(&file) else {
                bail!("template `{name}` not found (looked for {})", self.source.label(&file));
            };
            self.templates.add(name, &text)?;
        }
        self.templates.render(name, self.data)
    }
}

pub const KINDS: &[&str] = &[
    "file", "directory", "symlink", "absent", "packages", "service", "user", "group", "cron", "sysctl", "firewall",
    "certificate", "acme", "dns_record", "pg_role", "pg_database",
];

/// Build a state of type `kind` from its role parameters.
pub fn build(kind: &str, id: String, params: toml::Table, b: &mut Builder) -> Result<Box<dyn State>> {
    Ok(match kind {
        "file" => Box::new(file::FileState::build(id, params, b)?),
        "directory" => Box::new(directory::DirectoryState::build(id, params)?),
        "symlink" => Box::new(symlink::SymlinkState::build(id, params)?),
        "absent" => Box::new(absent::AbsentState::build(id, params)?),
        "packages" => packages::build(id, params, b)?,
        "service" => service::build(id, params, b)?,
        "user" => user::build(id, params, b)?,
        "group" => group::build(id, params, b)?,
        "cron" => cron::build(id, params, b)?,
        "sysctl" => sysctl::build(id, params, b)?,
        "firewall" => firewall::build(id, params, b)?,
        "certificate" => certificate::build(id, params, b)?,
        "acme" => acme::build(id, params, b)?,
        "dns_record" => dns_record::build(id, params, b)?,
        "pg_role" => postgres::build_role(id, params, b)?,
        "pg_database" => postgres::build_database(id, params, b)?,
        other => bail!("unknown state type `{other}` (known: {})", KINDS.join(", ")),
    })
}

/// Typed parameters from a role table; unknown keys are errors.
pub fn params<P: DeserializeOwned>(t: toml::Table) -> Result<P> {
    Ok(toml::Value::Table(t).try_into()?)
}

/// A managed path: absolute, normalized, not `/` itself.
pub fn managed_path(p: &Path) -> Result<PathBuf> {
    if !p.is_absolute() {
        bail!("`path` must be absolute, not `{}`", p.display());
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        bail!("`path` must not contain `..`: `{}`", p.display());
    }
    if p.parent().is_none() {
        bail!("`path` can't be `/` itself");
    }
    Ok(p.components().collect())
}

pub fn display(p: &Path) -> String {
    p.display().to_string()
}
