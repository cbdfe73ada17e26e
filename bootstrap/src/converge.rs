//! `apply` and `--check`: compile the states from the inputs (every input error surfaces here,
//! before anything changes), then run them (`execute.rs`).

use anyhow::Result;
use states::pipeline::{self, Peers};

use crate::cli::Opts;
use crate::execute::{execute, mode, Record};
use crate::inputs::Inputs;
use crate::{decommission, own_files, run, self_update};

/// The converge command: recorded (or given) roles, never prompting.
pub fn converge(opts: &Opts, roles: &[String]) -> Result<i32> {
    run::with_inputs(opts, roles, false, |inputs| converge_inputs(opts, inputs))
}

/// Converge gathered inputs, under the lock the caller holds.
pub fn converge_inputs(opts: &Opts, inputs: &mut Inputs) -> Result<i32> {
    if let Some(at) = decommission::since(&opts.root) {
        return decommission::refuse_apply(opts, inputs, at);
    }
    let mut prepared = pipeline::prepare(inputs.pipeline(opts, Peers::Discover { persist: !opts.check })?)?;
    prepared.nodes.extend(self_update::pin::node(&inputs.values));
    prepared.nodes.push(own_files::node());
    execute(opts, prepared, mode(opts), Record::Yes)
}
