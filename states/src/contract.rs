//! The state contract: what every module implements and what a plan is made of.

use std::any::Any;

use anyhow::Result;

use crate::context::Context;

/// One idempotent piece of configuration.
pub trait State: Send + Sync {
    /// The id the role gave it; unique within a run.
    fn id(&self) -> &str;
    /// The module name, e.g. `file`.
    fn kind(&self) -> &'static str;
    /// What it manages, for humans: a path, a package set, a unit name.
    fn target(&self) -> String;
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

    pub fn with_diff(mut self, diff: Option<String>) -> Self {
        self.diff = diff;
        self
    }
}
