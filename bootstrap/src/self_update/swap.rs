//! Putting a verified release in place without ever leaving the node without a working
//! binary: staged in the installed binary's own directory (so the final rename is atomic),
//! fsynced, run (`--version`, then a `--check` of the node), and only then renamed over the
//! installed one, whose previous version is kept for `--rollback`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context as _, Result};
use states::engine::atomic::{sync_dir, write_plain};
use states::engine::layout::Layout;

/// Set for the staged binary's `--check`: the run that stages it holds the lock.
pub const SELF_CHECK_ENV: &str = "BOOTSTRAP_SELF_CHECK";

/// Install `bytes`, verified as release `version`, as the node's binary.
pub fn install(layout: &Layout, bytes: &[u8], version: &str) -> Result<()> {
    let installed = layout.installed();
    let dir = installed.parent().ok_or_else(|| anyhow!("{} has no directory", installed.display()))?;
    let mut staged = tempfile::Builder::new()
        .prefix(".bootstrap.new.")
        .tempfile_in(dir)
        .with_context(|| format!("cannot stage the new binary in {}", dir.display()))?;
    staged.write_all(bytes)?;
    staged.as_file().set_permissions(std::fs::Permissions::from_mode(0o755))?;
    staged.as_file().sync_all()?;
    // Closed before it runs (a file open for writing can't be executed); removed on any error.
    let staged = staged.into_temp_path();
    self_check(&staged, &layout.root, version)?;
    let current = std::fs::read(&installed).with_context(|| format!("cannot read {}", installed.display()))?;
    write_plain(&layout.previous_binary(), &current, 0o755)?;
    staged.persist(&installed).map_err(|e| anyhow!("cannot replace {}: {}", installed.display(), e.error))?;
    sync_dir(dir)
}

/// The binary at `bin` must say it is `version`, and plan the node without an error.
fn self_check(bin: &Path, root: &Path, version: &str) -> Result<()> {
    let said = version_of(bin)?;
    if said != version {
        bail!("the new binary says it is {said}, its signed manifest says {version}: not installed");
    }
    let out = Command::new(bin)
        .arg("--check")
        .arg("--root")
        .arg(root)
        .args(["--color", "never"])
        .env(SELF_CHECK_ENV, "1")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run the new binary {}", bin.display()))?;
    match out.status.code() {
        Some(0 | 2) => Ok(()),
        code => {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect();
            bail!(
                "the new binary's `--check` of this node failed (exit {}): {}; not installed",
                code.map_or("by a signal".into(), |c| c.to_string()),
                tail.join(" / ")
            )
        }
    }
}

/// What `bin --version` says (`bootstrap X.Y.Z` → `X.Y.Z`).
pub fn version_of(bin: &Path) -> Result<String> {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().strip_prefix("bootstrap ") {
        Some(v) if out.status.success() => Ok(v.to_string()),
        _ => bail!("{} --version did not answer `bootstrap VERSION` (exit {:?})", bin.display(), out.status.code()),
    }
}

/// Put the previous binary back; the one it replaces becomes the previous (so a rollback can
/// itself be undone). Every step is a rename: the installed path always holds a whole binary.
pub fn rollback(layout: &Layout) -> Result<String> {
    let (installed, previous) = (layout.installed(), layout.previous_binary());
    if !previous.exists() {
        bail!("no previous binary at {}: nothing to roll back to", previous.display());
    }
    let version = version_of(&previous).context("the previous binary does not run; not rolled back")?;
    let dir = installed.parent().ok_or_else(|| anyhow!("{} has no directory", installed.display()))?;
    let hold = dir.join(".bootstrap.rollback");
    let _ = std::fs::remove_file(&hold);
    std::fs::hard_link(&installed, &hold).with_context(|| format!("cannot keep {}", installed.display()))?;
    std::fs::rename(&previous, &installed).with_context(|| format!("cannot restore {}", previous.display()))?;
    std::fs::rename(&hold, &previous).with_context(|| format!("cannot keep {}", previous.display()))?;
    sync_dir(dir)?;
    Ok(version)
}
