//! What a run did, as shown to humans, written to JSON and kept as the last-run report.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Check,
    Apply,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Already as wanted.
    Unchanged,
    /// `--check`: a run would change it.
    Pending,
    /// Changed by this run, and its second plan was empty.
    Changed,
    Failed,
    /// Not run because something it requires failed or was skipped.
    Skipped,
}

impl Status {
    /// As in the report and the journal's `STATUS` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unchanged => "unchanged",
            Status::Pending => "pending",
            Status::Changed => "changed",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangeReport {
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StateReport {
    pub id: String,
    pub kind: String,
    pub target: String,
    pub status: Status,
    pub changes: Vec<ChangeReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: f64,
    /// Digest of the desired state; compared with the last run to classify a change.
    #[serde(default)]
    pub fingerprint: String,
    /// For a changed state: `drift` (the system moved away from an unchanged desired state)
    /// or `intended` (the desired state is new or changed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<ChangeKind>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Drift,
    Intended,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NotificationReport {
    pub notification: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    pub mode: Mode,
    /// Unix time, seconds.
    pub started: u64,
    pub duration_ms: f64,
    pub states: Vec<StateReport>,
    pub notifications: Vec<NotificationReport>,
    pub unchanged: usize,
    pub changed: usize,
    pub pending: usize,
    pub failed: usize,
    pub skipped: usize,
    /// The site bundle this run converged to, when the node follows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteStatus>,
}

/// The site bundle a run used: where from, which serial, and whether getting a newer one
/// failed (the run then converged to the last good one, and reports the failure).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SiteStatus {
    pub url: String,
    pub serial: Option<u64>,
    /// When the server last answered, seconds since the epoch.
    pub fetched_at: Option<u64>,
    /// When the bundle in use was verified.
    pub verified_at: Option<u64>,
    pub error: Option<String>,
}

impl RunReport {
    /// The ids of the states with `status`, in run order.
    pub fn ids_with(&self, status: Status) -> Vec<String> {
        self.states.iter().filter(|s| s.status == status).map(|s| s.id.clone()).collect()
    }

    /// Something would change (`--check`): a state or a queued notification.
    pub fn has_pending(&self) -> bool {
        self.pending > 0 || self.notifications.iter().any(|n| n.status == Status::Pending)
    }

    pub fn has_failures(&self) -> bool {
        self.failed > 0
            || self.site.as_ref().is_some_and(|s| s.error.is_some())
            || self.notifications.iter().any(|n| n.status == Status::Failed)
    }

    /// The exit code the command line returns: 0 converged, 1 failed, 2 `--check` found changes.
    pub fn exit_code(&self) -> i32 {
        if self.has_failures() {
            1
        } else if self.mode == Mode::Check && self.has_pending() {
            2
        } else {
            0
        }
    }
}
