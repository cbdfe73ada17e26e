//! The library behind `bootstrap`: the state contract, the engine that plans and applies, and
//! every state module. See shared/DESIGN.md for the contract.

pub mod absent;
pub mod atomic;
pub mod content;
pub mod cron;
pub mod context;
pub mod contract;
pub mod directory;
pub mod engine;
pub mod facts;
pub mod fetch;
pub mod file;
pub mod graph;
pub mod group;
pub mod module;
pub mod notify;
pub mod ownership;
pub mod packages;
pub mod report;
pub mod role;
pub mod runner;
pub mod secrets;
pub mod service;
pub mod shared;
pub mod symlink;
pub mod sysctl;
pub mod template;
pub mod user;

pub use context::Context;
pub use contract::{Change, Plan, State};
