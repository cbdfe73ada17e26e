//! `cron`: being written (issue 3). Until then a role using it is refused at compile time.

use anyhow::{bail, Result};

use crate::contract::State;
use crate::module::Builder;

pub fn build(_id: String, _params: toml::Table, _b: &mut Builder) -> Result<Box<dyn State>> {
    bail!("the `cron` state type is not available yet")
}

#[allow(dead_code)]
struct CronState;
