//! The library behind `bootstrap`: the state contract, the engine that plans and applies, and
//! every state module. See shared/DESIGN.md for the contract.

pub mod absent;
pub mod acme;
pub mod accounts;
pub mod apt;
pub mod atomic;
pub mod certificate;
pub mod conf_file;
pub mod content;
pub mod cron;
pub mod context;
pub mod contract;
pub mod directory;
pub mod discovery;
pub mod dns_record;
pub mod dpkg_status;
pub mod engine;
pub mod facts;
pub mod fetch;
pub mod file;
pub mod firewall;
pub mod graph;
pub mod group;
pub mod module;
pub mod notify;
pub mod ownership;
pub mod package_manager;
pub mod packages;
pub mod postgres;
pub mod report;
pub mod role;
pub mod runner;
pub mod secrets;
pub mod service;
pub mod settings;
pub mod shared;
pub mod symlink;
pub mod sysctl;
pub mod systemd;
pub mod template;
pub mod user;

pub use context::Context;
pub use contract::{Change, Plan, State};
