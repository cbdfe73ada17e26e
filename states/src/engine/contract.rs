//! The state contract: what every module implements and what a plan is made of.

use std::any::Any;
use std::path::PathBuf;

use anyhow::Result;

use crate::engine::context::Context;

/// One idempotent piece of configuration.
/// The engine keeps each state's id and kind; a kind implements what is its own.
pub trait State: Send + Sync {
    /// What it manages, for humans: a path, a package set, a unit name.
    fn target(&self) -> String;
    /// What it owns on the system. The role compiler refuses two states claiming one thing,
    /// before anything runs: they would undo each other on every run.
    fn claims(&self) -> Vec<Claim>;
    /// Observe the system and say what must change. Never modifies anything.
    fn plan(&self, cx: &Context) -> Result<Plan>;
    /// Carry out exactly `plan`; called only when it is not empty.
    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()>;
    /// A digest of desired state not visible in the role parameters (rendered content), so a
    /// report can tell drift (same desired state as last run) from an intended change.
    fn digest(&self) -> Option<String> {
        None
    }
    /// The systemd unit this state manages, if any: the engine carries out pending reloads
    /// and restarts of that unit right after the state, so what requires it sees the new
    /// configuration (not only at the end of the run).
    fn service_unit(&self) -> Option<&str> {
        None
    }

    /// Whether carrying out `plan` started that unit: it then read its configuration afresh,
    /// so its queued reloads are done without being sent (a reload right after a start can
    /// reach a daemon before it handles the signal: SIGHUP then ends it).
    fn starts_unit(&self, _plan: &Plan) -> bool {
        false
    }
}

/// The changes one state needs; empty when the system already matches.
#[derive(Default)]
pub struct Plan {
    pub changes: Vec<Change>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn push(&mut self, change: Change) {
        self.changes.push(change);
    }

    /// The module's own operations of type `T`, in plan order.
    pub fn ops<T: Any>(&self) -> impl Iterator<Item = &T> {
        self.changes.iter().filter_map(|c| c.op.downcast_ref::<T>())
    }
}

/// One planned change: a one-line summary, an optional diff already redacted where the content
/// is secret, and the module's private operation that `apply` carries out.
pub struct Change {
    pub summary: String,
    pub diff: Option<String>,
    op: Box<dyn Any + Send + Sync>,
}

impl Change {
    pub fn new<T: Any + Send + Sync>(summary: impl Into<String>, op: T) -> Self {
        Change { summary: summary.into(), diff: None, op: Box::new(op) }
    }

    /// The operation, when it is a `T` (for a state that wraps another module's changes).
    pub fn op<T: Any>(&self) -> Option<&T> {
        self.op.downcast_ref::<T>()
    }

    pub fn with_diff(mut self, diff: Option<String>) -> Self {
        self.diff = diff;
        self
    }
}

/// One thing on the system that a state owns.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Thing {
    /// A path as on the node (absolute).
    Path(PathBuf),
    /// A systemd unit (`haproxy.service`).
    Unit(String),
    /// A DNS record set: name and type (`db1.fleet.test. A`).
    Record(String),
    /// An nftables table (`inet bootstrap`).
    Table(String),
    User(String),
    Group(String),
    /// A kernel parameter (`net.ipv4.ip_forward`).
    Sysctl(String),
    PgRole(String),
    PgDatabase(String),
    /// A Docker stack (`web`).
    Stack(String),
}

impl std::fmt::Display for Thing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Thing::Path(p) => write!(f, "path {}", p.display()),
            Thing::Unit(u) => write!(f, "unit {u}"),
            Thing::Record(r) => write!(f, "DNS record {r}"),
            Thing::Table(t) => write!(f, "nftables table {t}"),
            Thing::User(u) => write!(f, "user {u}"),
            Thing::Group(g) => write!(f, "group {g}"),
            Thing::Sysctl(s) => write!(f, "sysctl {s}"),
            Thing::PgRole(r) => write!(f, "PostgreSQL role {r}"),
            Thing::PgDatabase(d) => write!(f, "PostgreSQL database {d}"),
            Thing::Stack(s) => write!(f, "Docker stack {s}"),
        }
    }
}

/// A state's claim on a thing. A claim may name the one other kind it shares the thing with,
/// by design (a self-signed `certificate` holds `site.pem` until `acme` replaces it); both
/// sides must say so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub thing: Thing,
    pub shared_with: Option<&'static str>,
}

impl Claim {
    pub fn path(p: impl Into<PathBuf>) -> Self {
        Claim { thing: Thing::Path(p.into()), shared_with: None }
    }

    pub fn new(thing: Thing) -> Self {
        Claim { thing, shared_with: None }
    }

    /// This claim may coincide with one of a state of kind `kind` that says the same of us.
    pub fn shared_with(mut self, kind: &'static str) -> Self {
        self.shared_with = Some(kind);
        self
    }
}
