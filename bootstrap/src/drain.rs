//! `bootstrap drain` / `undrain`: take an app node out of service and back. The mark
//! (`/var/lib/bootstrap/drained`) is template data (`node.drained`), so the roles say what
//! draining means (keepalived stopped so a peer takes the floating IP, the SRV record removed)
//! and every scheduled run keeps it so until `undrain` removes the mark. Then the node
//! converges at once.

use anyhow::{Context as _, Result};
use states::engine::layout::Layout;

use crate::cli::Opts;
use crate::{converge, run};

/// When the node was drained (seconds since the epoch), if it is.
pub fn since(root: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(Layout::new(root).drained()).ok().and_then(|t| t.trim().parse().ok())
}

/// Mark (or unmark) the node, under the run lock, and converge at once: a scheduled run can't
/// be half-way with the old value.
pub fn set(opts: &Opts, drained: bool) -> Result<i32> {
    run::with_inputs(opts, &[], false, |inputs| {
        mark(opts, drained)?;
        tracing::info!(drained, "node {}", if drained { "drained" } else { "back in service" });
        converge::converge_inputs(opts, inputs)
    })
}

fn mark(opts: &Opts, drained: bool) -> Result<()> {
    let path = Layout::new(&opts.root).drained();
    if drained && since(&opts.root).is_none() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        states::engine::atomic::write_plain(&path, format!("{now}\n").as_bytes(), 0o644)
            .with_context(|| format!("cannot record the drain in {}", path.display()))?;
    } else if !drained {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove {}", path.display()))
            }
            _ => {}
        }
    }
    Ok(())
}
