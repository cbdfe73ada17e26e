//! What a kind's constructor is given, and the helpers every constructor shares. The kinds
//! table (`kinds/mod.rs`) maps a type name to one `Constructor`; the role compiler calls it.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Result};
use serde::de::DeserializeOwned;

use crate::engine::content::Content;
use crate::engine::context::Context;
use crate::engine::contract::State;

/// Builds one state from its role parameters (settings already filled in).
pub type Constructor = fn(toml::Table, &mut Builder) -> Result<Box<dyn State>>;

/// Renders a named template of the role source with the run's template data.
pub trait Render {
    fn render(&mut self, name: &str) -> Result<Content>;
}

/// What a constructor may use: the state's id, the run's context, and the templates.
pub struct Builder<'a> {
    /// The id the role gave the state (the engine keeps it; a kind may name it in what it writes).
    pub id: &'a str,
    pub cx: &'a Context,
    templates: &'a mut dyn Render,
    /// Whether this node is the fleet's authoritative node (the site's `admin_node`); `None`
    /// when the site names none. Singleton states run only there.
    pub authoritative: Option<bool>,
}

impl<'a> Builder<'a> {
    pub fn new(id: &'a str, cx: &'a Context, templates: &'a mut dyn Render) -> Self {
        Builder { id, cx, templates, authoritative: None }
    }

    /// Render `templates/NAME` from the role source.
    pub fn render(&mut self, name: &str) -> Result<Content> {
        self.templates.render(name)
    }
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
