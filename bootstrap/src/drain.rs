//! `bootstrap drain` / `undrain`: take an app node out of service and back. The mark
//! (`/var/lib/bootstrap/drained`) is template data (`node.drained`), so the roles say what
//! draining means (keepalived stopped so a peer takes the floating IP, the SRV record removed)
//! and every scheduled run keeps it so until `undrain` removes the mark. Then the node
//! converges at once.

use anyhow::Result;
use states::engine::layout::Layout;

use crate::cli::Opts;
use crate::{converge, mark, run};

/// When the node was drained (seconds since the epoch), if it is.
pub fn since(root: &std::path::Path) -> Option<u64> {
    mark::since(&Layout::new(root).drained())
}

/// Mark (or unmark) the node, under the run lock, and converge at once: a scheduled run can't
/// be half-way with the old value.
pub fn set(opts: &Opts, drained: bool) -> Result<i32> {
    run::with_inputs(opts, &[], false, |inputs| {
        let path = Layout::new(&opts.root).drained();
        if drained {
            mark::set(&path, "drain")?;
        } else {
            mark::clear(&path)?;
        }
        tracing::info!(drained, "node {}", if drained { "drained" } else { "back in service" });
        converge::converge_inputs(opts, inputs)
    })
}
