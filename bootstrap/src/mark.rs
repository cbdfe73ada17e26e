//! The node's marks: a file under `/var/lib/bootstrap` holding when it was set (seconds since
//! the epoch), e.g. `decommissioned`, `drained`.

use std::path::Path;

use anyhow::{Context as _, Result};

/// When the mark at `path` was set, if it is.
pub fn since(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok())
}

/// Set the mark (its first time is kept); `what` names it in an error.
pub fn set(path: &Path, what: &str) -> Result<()> {
    if since(path).is_some() {
        return Ok(());
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    states::engine::atomic::write_plain(path, format!("{now}\n").as_bytes(), 0o644)
        .with_context(|| format!("cannot record the {what} in {}", path.display()))
}

pub fn clear(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}
