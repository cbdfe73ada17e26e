//! Putting a verified release in place without ever leaving the node without a working
//! binary: staged in the installed binary's own directory (so the final rename is atomic),
//! fsynced, run (`--version`, then a `--check` of the node), and only then renamed over the
//! installed one, whose previous version is kept for `--rollback`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use states::engine::atomic::{sync_dir, write_plain};
use states::engine::layout::Layout;
use states::engine::runner::{Cmd, Runner, SystemRunner};

/// Set for the staged binary's `--check`: the run that stages it holds the lock.
pub const SELF_CHECK_ENV: &str = "BOOTSTRAP_SELF_CHECK";
/// A dry run of a node takes well under a second; a staged binary that hangs must not hold the
/// lock (and every scheduled run) for long.
const SELF_CHECK_TIMEOUT: Duration = Duration::from_secs(120);
/// `--version` answers at once; a binary that hangs must not hold the lock either.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);
const STAGED_PREFIX: &str = ".bootstrap.new.";

/// Install `bytes`, verified as release `version`, as the node's binary.
pub fn install(layout: &Layout, bytes: &[u8], version: &str) -> Result<()> {
    let installed = layout.installed();
    let dir = installed.parent().ok_or_else(|| anyhow!("{} has no directory", installed.display()))?;
    sweep(dir);
    let mut staged = tempfile::Builder::new()
        .prefix(STAGED_PREFIX)
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

/// Remove what an update killed half-way left staged (we hold the lock: none is in use).
fn sweep(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(STAGED_PREFIX) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The binary at `bin` must say it is `version`, and plan the node without an error.
fn self_check(bin: &Path, root: &Path, version: &str) -> Result<()> {
    let said = version_of(bin)?;
    if said != version {
        bail!("the new binary says it is {said}, its signed manifest says {version}: not installed");
    }
    check_node(bin, root, SELF_CHECK_TIMEOUT)
}

/// `bin --check` of the node, within `timeout` (the lock is held meanwhile). Through the
/// engine's runner: in its own group, killed as one on the bound, and with this run if it dies.
fn check_node(bin: &Path, root: &Path, timeout: Duration) -> Result<()> {
    let cmd = Cmd::new(bin.to_string_lossy())
        .arg("--check")
        .arg("--root")
        .arg(root.to_string_lossy())
        .args(["--color", "never"])
        .env(SELF_CHECK_ENV, "1")
        .timeout(timeout);
    let out =
        SystemRunner.run(&cmd).map_err(|e| anyhow!("the new binary's `--check` of this node: {e:#}; not installed"))?;
    match out.code {
        Some(0 | 2) => Ok(()),
        code => {
            let tail: Vec<&str> = out.stderr.lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect();
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
    version_within(bin, VERSION_TIMEOUT)
}

fn version_within(bin: &Path, timeout: Duration) -> Result<String> {
    let out = SystemRunner.run(&Cmd::new(bin.to_string_lossy()).arg("--version").timeout(timeout))?;
    match out.stdout.trim().strip_prefix("bootstrap ") {
        Some(v) if out.success() => Ok(v.to_string()),
        _ => bail!("{} --version did not answer `bootstrap VERSION` (exit {:?})", bin.display(), out.code),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A release that answers `--version` and then hangs on the node's `--check`.
    fn hanging_binary(dir: &Path, version_too: bool) -> std::path::PathBuf {
        let bin = dir.join(if version_too { "hangs" } else { "bootstrap" });
        let version = if version_too { "sleep 30; true" } else { "echo 'bootstrap 9.9.9'" };
        let script = format!("#!/bin/sh\nif [ \"$1\" = --version ]; then {version}; else sleep 30; true; fi\n");
        std::fs::write(&bin, script).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin
    }

    #[test]
    fn a_hanging_binary_is_given_up_on_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let bin = hanging_binary(dir.path(), false);
        assert_eq!(version_of(&bin).unwrap(), "9.9.9");
        let t = Instant::now();
        let err = format!("{:#}", check_node(&bin, dir.path(), Duration::from_millis(300)).unwrap_err());
        assert!(err.contains("did not finish within") && err.ends_with("not installed"), "{err}");
        let bin = hanging_binary(dir.path(), true);
        let err = format!("{:#}", version_within(&bin, Duration::from_millis(300)).unwrap_err());
        assert!(err.contains("did not finish within"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(10), "waited for the hanging binary");
    }
}
