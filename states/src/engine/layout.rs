//! Where bootstrap keeps its own files on a node (README's "On the node" table), under a root
//! (`/` on a node, a temporary tree in tests). Every one of them is named here, once.

use std::path::{Path, PathBuf};

/// The installed binary.
pub const INSTALLED: &str = "/usr/local/sbin/bootstrap";
/// The binary it replaced, for `self-update --rollback`.
pub const PREVIOUS: &str = "/usr/local/sbin/bootstrap.prev";
/// Site settings given at install.
pub const SITE_FILE: &str = "/etc/bootstrap/site.toml";
/// The node's roles.
pub const NODE_FILE: &str = "/etc/bootstrap/node.toml";
/// Secrets, root-only.
pub const SECRETS_FILE: &str = "/etc/bootstrap/secrets.toml";
/// The key of the SCRAM check tags (`sys/scram_checked`), with the other secrets.
pub const SCRAM_KEY: &str = "/etc/bootstrap/scram-checked.key";
/// The schedule.
pub const CRON_FILE: &str = "/etc/cron.d/bootstrap";
/// One run at a time.
pub const LOCK_FILE: &str = "/run/bootstrap.lock";
/// The process groups of the running run's children (`engine::children`), root-only.
pub const CHILDREN_DIR: &str = "/run/bootstrap/children";
/// Reports, pending notifications, backups, peers, the ACME account.
pub const STATE_DIR: &str = "/var/lib/bootstrap";
/// Where node-exporter's textfile collector reads metrics, when it exists.
pub const METRICS_DIR: &str = "/var/lib/prometheus/node-exporter";

/// The node's files under one root.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    /// `abs` (an absolute path as on the node) under the root.
    pub fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        let abs = abs.as_ref();
        self.root.join(abs.strip_prefix("/").unwrap_or(abs))
    }

    pub fn installed(&self) -> PathBuf {
        self.path(INSTALLED)
    }

    pub fn previous_binary(&self) -> PathBuf {
        self.path(PREVIOUS)
    }

    pub fn site_file(&self) -> PathBuf {
        self.path(SITE_FILE)
    }

    pub fn node_file(&self) -> PathBuf {
        self.path(NODE_FILE)
    }

    pub fn secrets_file(&self) -> PathBuf {
        self.path(SECRETS_FILE)
    }

    pub fn cron_file(&self) -> PathBuf {
        self.path(CRON_FILE)
    }

    pub fn lock_file(&self) -> PathBuf {
        self.path(LOCK_FILE)
    }

    pub fn children_dir(&self) -> PathBuf {
        self.path(CHILDREN_DIR)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path(STATE_DIR)
    }

    /// The last run's report.
    pub fn last_run(&self) -> PathBuf {
        self.state_dir().join("last-run.json")
    }

    /// Written by `bootstrap decommission`: the node left the fleet; `apply` won't rejoin it.
    pub fn decommissioned(&self) -> PathBuf {
        self.state_dir().join("decommissioned")
    }

    /// Written by `bootstrap drain`: the node gives up the floating IP and its SRV record until
    /// `bootstrap undrain`.
    pub fn drained(&self) -> PathBuf {
        self.state_dir().join("drained")
    }

    /// Reloads owed by an interrupted run.
    pub fn pending_notifications(&self) -> PathBuf {
        self.state_dir().join("pending-notifications.json")
    }

    /// The previous version of every file replaced or removed.
    pub fn backup_dir(&self) -> PathBuf {
        self.state_dir().join("backup")
    }

    /// Last known good peers per discovery.
    pub fn peers(&self) -> PathBuf {
        self.state_dir().join("peers.json")
    }

    /// The ACME account key and retry records.
    pub fn acme_dir(&self) -> PathBuf {
        self.state_dir().join("acme")
    }

    pub fn metrics_dir(&self) -> PathBuf {
        self.path(METRICS_DIR)
    }

    pub fn metrics_file(&self) -> PathBuf {
        self.metrics_dir().join("bootstrap.prom")
    }
}
