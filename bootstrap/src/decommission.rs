//! `bootstrap decommission`: leave the fleet. Removes this node's own DNS records (every
//! `dns_record` state of its roles, in reverse order) and the schedule, so it neither
//! announces itself nor heals back. Services and data stay; `bootstrap apply` rejoins.

use anyhow::Result;
use states::dns_record;
use states::role;

use crate::cli::Opts;
use crate::converge::{context, scrubbed};
use crate::{inputs, lock, schedule};

pub fn run(opts: &Opts) -> Result<i32> {
    let inputs = inputs::gather(opts, &[], false)?;
    let _lock = match lock::acquire(&opts.root, true)? {
        Some(lock::Lock::Busy) => return Ok(lock::busy()),
        held => held,
    };
    let secrets = inputs.secrets();
    scrubbed(&secrets, || {
        let (cx, templates, data) = context(opts, &inputs)?;
        let records = role::instances(&inputs.set.states, "dns_record", &templates, &data)?;
        let mut failed = 0;
        for (id, params) in records.into_iter().rev() {
            match dns_record::deregister(&cx, &id, params) {
                Ok(done) if done.is_empty() => println!("{id}: already gone"),
                Ok(done) => done.iter().for_each(|d| println!("{id}: {d}")),
                Err(e) => {
                    failed += 1;
                    println!("{id}: failed: {}", cx.secrets.scrub(&format!("{e:#}")));
                }
            }
        }
        let cron = opts.root.join(schedule::CRON_FILE.trim_start_matches('/'));
        if cron.exists() {
            std::fs::remove_file(&cron)?;
            println!("schedule: removed {}", schedule::CRON_FILE);
        } else {
            println!("schedule: already gone");
        }
        tracing::info!(failed, "decommissioned");
        Ok(if failed > 0 { 1 } else { 0 })
    })
}
