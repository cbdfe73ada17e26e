//! What a state may reach: the root directory, facts, secrets and the command runner.

use std::path::{Path, PathBuf};

use crate::engine::facts::Facts;
use crate::engine::layout::Layout;
use crate::engine::runner::Runner;
use crate::engine::secrets::Secrets;
use crate::engine::shared::Shared;

pub struct Context {
    /// `/` on a node; a temporary tree in tests. Every path a state touches is under it.
    pub root: PathBuf,
    pub facts: Facts,
    pub secrets: Secrets,
    pub runner: Box<dyn Runner>,
    /// Observations shared by states within this run, and build-time registrations.
    pub shared: Shared,
}

impl Context {
    /// For unit tests: `root` with no facts or secrets, and the real runner.
    #[cfg(test)]
    pub(crate) fn for_tests(root: &Path) -> Context {
        Context {
            root: root.to_path_buf(),
            facts: Facts::default(),
            secrets: Secrets::default(),
            runner: Box::new(crate::engine::runner::SystemRunner),
            shared: Default::default(),
        }
    }

    /// `abs` (an absolute path as a role names it) inside the root.
    pub fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        self.layout().path(abs)
    }

    /// Where bootstrap's own files are under the root.
    pub fn layout(&self) -> Layout {
        Layout::new(&self.root)
    }

    /// `/var/lib/bootstrap`: reports, pending notifications, backups.
    pub fn state_dir(&self) -> PathBuf {
        self.layout().state_dir()
    }

    /// True when the states act on the running system rather than on a tree.
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// True when an observation may go to a daemon's socket rather than through a tool: the
    /// running system, reached by the real runner (not a test's substitute).
    pub fn direct(&self) -> bool {
        self.is_live() && self.runner.is_system()
    }

    /// For modules that manage the running system (packages, services, sysctl): a clear error
    /// when the states act on a tree instead.
    pub fn require_live(&self, what: &str) -> anyhow::Result<()> {
        if !self.is_live() {
            anyhow::bail!("{what} can only be managed on the running system, not under --root {}", self.root.display());
        }
        Ok(())
    }
}
