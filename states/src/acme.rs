//! `acme`: being written (issues 5 and 6). Until then a role using it is refused at compile time.

use anyhow::{bail, Result};

use crate::contract::State;
use crate::module::Builder;

pub fn build(_id: String, _params: toml::Table, _b: &mut Builder) -> Result<Box<dyn State>> {
    bail!("the `acme` state type is not available yet")
}
