//! A state that a dry run can't plan because a secret it needs was not given: it stands in for
//! the real one and shows as pending, with the reason, so a dry run on a fresh node (before the
//! operator types any secret) still shows everything else it would do.

use anyhow::{bail, Result};

use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State};

pub struct NeedsSecrets {
    pub target: String,
    pub secrets: Vec<String>,
}

impl NeedsSecrets {
    fn reason(&self) -> String {
        let names: Vec<String> = self.secrets.iter().map(|s| format!("`{s}`")).collect();
        format!("needs secret {}, which this dry run was not given: planned at install", names.join(", "))
    }
}

impl State for NeedsSecrets {
    fn target(&self) -> String {
        self.target.clone()
    }

    fn claims(&self) -> Vec<Claim> {
        Vec::new()
    }

    fn plan(&self, _: &Context) -> Result<Plan> {
        let mut plan = Plan::default();
        plan.push(Change::new(self.reason(), ()));
        Ok(plan)
    }

    fn apply(&self, _: &Context, _: &Plan) -> Result<()> {
        bail!("{} (a run never gets here: it stops first when a secret is missing)", self.reason())
    }
}
