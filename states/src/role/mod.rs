//! Roles: TOML files listing states, with their settings defaults and the secrets they need.
//! Loaded from a source (embedded, or a directory), merged with their includes, then compiled
//! into engine nodes. Every error names the file, line and key.

pub mod compile;
pub mod for_each;
pub mod lines;
pub mod load;
pub mod params;
pub mod parse;
pub mod settings;
pub mod source;
pub mod template;

pub use compile::{compile, Compiled, Fingerprints};
pub use load::{known_settings, load, RoleSet};
pub use params::resolve_params;
pub use parse::{Derive, Origin, SecretSpec, StateSpec};
pub use source::{DirSource, EmbeddedSource, Layered, RoleSource};
