//! The distribution's package manager, behind a trait so that the `packages` state never names
//! apt: another backend (dnf) is one more implementation and one more arm in the `packages` kind's `for_system`.

use anyhow::Result;

use crate::engine::context::Context;

pub trait PackageManager: Send + Sync {
    /// The backend's name, for messages.
    fn name(&self) -> &'static str;
    /// A clear error unless `name` is a valid package name for this distribution.
    fn check_name(&self, name: &str) -> Result<()>;
    /// Which of `names` are installed. Observes the system once per run (through `cx.shared`),
    /// never one process per package.
    fn installed(&self, cx: &Context, names: &[String]) -> Result<Vec<bool>>;
    /// Install all of `names` in one transaction, refreshing the index only when needed.
    fn install(&self, cx: &Context, names: &[String]) -> Result<()>;
    /// Remove `names`, keeping their configuration files.
    fn remove(&self, cx: &Context, names: &[String]) -> Result<()>;
}
