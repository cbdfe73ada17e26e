//! `bootstrap decommission`: leave the fleet. Removes this node's own DNS records (every
//! `dns_record` state of its roles, newest first) and the schedule, so it neither announces
//! itself nor heals back; run by the engine like any states, so `--check` shows what it would
//! remove. Services and data stay; `bootstrap apply` rejoins.

use anyhow::Result;
use states::pipeline::{self, Peers};

use crate::cli::Opts;
use crate::converge::{execute, mode, Record};
use crate::run;

pub fn run(opts: &Opts) -> Result<i32> {
    run::with_inputs(opts, &[], false, |inputs| {
        let prepared = pipeline::decommission(inputs.pipeline(opts, Peers::Discover { persist: false })?)?;
        let code = execute(opts, prepared, mode(opts), Record::No)?;
        tracing::info!(code, "decommissioned");
        Ok(code)
    })
}
