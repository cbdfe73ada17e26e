//! PostgreSQL roles and databases: being written (issue 6). Until then a role using them is
//! refused at compile time.

use anyhow::{bail, Result};

use crate::contract::State;
use crate::module::Builder;

pub fn build_role(_id: String, _params: toml::Table, _b: &mut Builder) -> Result<Box<dyn State>> {
    bail!("the `pg_role` state type is not available yet")
}

pub fn build_database(_id: String, _params: toml::Table, _b: &mut Builder) -> Result<Box<dyn State>> {
    bail!("the `pg_database` state type is not available yet")
}
