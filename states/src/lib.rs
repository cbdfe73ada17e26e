//! The library behind `bootstrap`, by layer (see ARCHITECTURE.md):
//!
//! - `engine`: the state contract, the context a state reaches the system through, ordering,
//!   notifications, atomic writes and the run report. It knows no state kind.
//! - `sys`: one wrapper per system tool or protocol (apt, systemd, nft, psql, DNS, ACME, x509).
//! - `files`: what the file-writing kinds share (owner/group/mode, generated config files).
//! - `kinds`: one module per state kind, and the one table that names them.
//! - `role`: role sources, parsing, parameters, templates, and the compiler to engine nodes.
//! - `pipeline`: a run from its inputs (roles, settings, secrets, facts, peers) to compiled
//!   states, used by the binary and the tests alike.

pub mod engine;
pub mod files;
pub mod kinds;
pub mod pipeline;
pub mod role;
pub mod sys;

pub use engine::context::Context;
pub use engine::contract::{Change, Plan, State};
