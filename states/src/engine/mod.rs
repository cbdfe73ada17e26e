//! The engine: the state contract and everything a run needs that is not a state kind.

pub mod atomic;
pub mod beneath;
pub mod build;
pub mod children;
pub mod content;
pub mod context;
pub mod contract;
pub mod deferred;
pub mod facts;
pub mod graph;
pub mod layout;
pub mod notify;
pub mod report;
pub mod run;
pub mod runner;
pub mod secrets;
pub mod shared;
