//! `bootstrap decommission`: leave the fleet. Records that the node left
//! (`/var/lib/bootstrap/decommissioned`), then removes its own DNS records (every `dns_record`
//! state of its roles, newest first) and, once they are gone, the schedule: a removal that
//! fails (DNS down) is retried by the schedule until it succeeds. Run by the engine like any
//! states, so `--check` shows what it would remove. From then on `apply` only finishes leaving
//! and refuses to rejoin; `bootstrap ROLE…` installs the node again. A db node with `db_ha`
//! also hands its Patroni leadership over, stops Patroni and leaves etcd (see
//! `pipeline::decommission`); other services and the data stay.

use anyhow::{bail, Result};
use states::engine::layout::Layout;
use states::pipeline::{self, Peers};

use states::engine::notify::SystemdNotifier;
use states::engine::report::{Mode, Status};
use states::engine::run as engine;

use crate::cli::Opts;
use crate::execute::{execute, mode, Record};
use crate::inputs::Inputs;
use crate::{mark, run};

pub fn run(opts: &Opts) -> Result<i32> {
    run::with_inputs(opts, &[], false, |inputs| {
        let prepared = pipeline::decommission(inputs.pipeline(opts, Peers::Discover { persist: false })?)?;
        if !opts.check {
            refusals(&prepared)?;
            record(&opts.root)?;
        }
        finish(opts, prepared)
    })
}

/// Run the removal states (all that is left of them).
pub fn leave(opts: &Opts, inputs: &mut Inputs) -> Result<i32> {
    finish(opts, pipeline::decommission(inputs.pipeline(opts, Peers::Discover { persist: false })?)?)
}

fn finish(opts: &Opts, prepared: pipeline::Prepared) -> Result<i32> {
    let code = execute(opts, prepared, mode(opts), Record::No)?;
    if code == 1 {
        eprintln!("not all of this node's records could be removed: the schedule stays and retries until they are");
    }
    tracing::info!(code, "decommission run");
    Ok(code)
}

/// Plans the leaving states that may refuse (`pipeline::MAY_REFUSE`: a swarm manager that
/// would break the quorum) before anything is recorded or removed: a refusal changes nothing.
fn refusals(prepared: &pipeline::Prepared) -> Result<()> {
    if !prepared.nodes.iter().any(|n| pipeline::MAY_REFUSE.contains(&n.kind)) {
        return Ok(());
    }
    let report = engine::run(&prepared.cx, &prepared.nodes, Mode::Check, &SystemdNotifier, &mut |_| {})?;
    let refused: Vec<String> = report
        .states
        .iter()
        .filter(|s| pipeline::MAY_REFUSE.contains(&s.kind.as_str()) && s.status == Status::Failed)
        .map(|s| format!("{}: {}", s.id, s.error.as_deref().unwrap_or("failed")))
        .collect();
    if !refused.is_empty() {
        bail!("decommission refused, nothing was changed: {}", prepared.cx.secrets.scrub(&refused.join("; ")));
    }
    Ok(())
}

/// When the node was decommissioned (seconds since the epoch), if it was.
pub fn since(root: &std::path::Path) -> Option<u64> {
    mark::since(&Layout::new(root).decommissioned())
}

fn record(root: &std::path::Path) -> Result<()> {
    mark::set(&Layout::new(root).decommissioned(), "decommission")
}

/// Forget a decommission: the node is being installed again.
pub fn forget(root: &std::path::Path) -> Result<()> {
    mark::clear(&Layout::new(root).decommissioned())
}

/// `apply` on a decommissioned node: finish leaving (a removal may have failed), then refuse.
pub fn refuse_apply(opts: &Opts, inputs: &mut Inputs, at: u64) -> Result<i32> {
    let code = leave(opts, inputs)?;
    let when = chrono::DateTime::from_timestamp(at as i64, 0)
        .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M %Z").to_string())
        .unwrap_or_default();
    let what = if opts.check { "--check" } else { "apply" };
    let again = inputs.roles.join(" ");
    let msg = format!(
        "this node left the fleet (decommissioned {when}); `{what}` does not rejoin it: run `bootstrap {again}` to install it again"
    );
    if opts.check {
        eprintln!("{msg}");
        return Ok(code);
    }
    bail!("{msg}")
}
