//! The ritual every acting command shares, in one order: gather the inputs (bad input stops
//! here, before even the lock file is written), take the lock (a dry run takes it only if a
//! run could hold it), and do the work with every error scrubbed of the secrets it may quote
//! (a tool's error can echo a file it read).

use anyhow::{anyhow, Result};

use crate::cli::Opts;
use crate::inputs::{self, Inputs};
use crate::lock;

/// Run `work` under the lock with the gathered inputs (`install`: a first install, which may
/// prompt). A secret added to the inputs by `work` is scrubbed too.
pub fn with_inputs(
    opts: &Opts,
    roles: &[String],
    install: bool,
    work: impl FnOnce(&mut Inputs) -> Result<i32>,
) -> Result<i32> {
    let mut inputs = inputs::gather(opts, roles, install)?;
    let _lock = match lock::acquire(&opts.root, !opts.check)? {
        Some(lock::Lock::Busy) => return Ok(lock::busy()),
        held => held,
    };
    let result = work(&mut inputs);
    result.map_err(|e| anyhow!("{}", inputs.secrets().scrub(&format!("{e:#}"))))
}
