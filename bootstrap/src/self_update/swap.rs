//! Putting a verified release in place without ever leaving the node without a working
//! binary: staged in the installed binary's own directory (so the final rename is atomic),
//! fsynced, run (`--version`, then a `--check` of the node), and only then renamed over the
//! installed one, whose previous version is kept for `--rollback`.

use std::io::{Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use states::engine::atomic::{sync_dir, write_plain};
use states::engine::layout::Layout;
use wait_timeout::ChildExt;

/// Set for the staged binary's `--check`: the run that stages it holds the lock.
pub const SELF_CHECK_ENV: &str = "BOOTSTRAP_SELF_CHECK";
/// A dry run of a node takes well under a second; a staged binary that hangs must not hold the
/// lock (and every scheduled run) for long.
const SELF_CHECK_TIMEOUT: Duration = Duration::from_secs(120);
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
    // Its report is not needed, only whether it errs and why: stderr to a file (a pipe could
    // fill up and stall it), and a bound, since the lock is held meanwhile.
    let mut err_file = tempfile::tempfile()?;
    let mut child = Command::new(bin)
        .arg("--check")
        .arg("--root")
        .arg(root)
        .args(["--color", "never"])
        .env(SELF_CHECK_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file.try_clone()?)
        .spawn()
        .with_context(|| format!("cannot run the new binary {}", bin.display()))?;
    let status = match child.wait_timeout(SELF_CHECK_TIMEOUT)? {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the new binary's `--check` of this node took over {SELF_CHECK_TIMEOUT:?}; not installed");
        }
    };
    let mut err = String::new();
    err_file.seek(std::io::SeekFrom::Start(0))?;
    err_file.read_to_string(&mut err)?;
    match status.code() {
        Some(0 | 2) => Ok(()),
        code => {
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
