//! The lockout guard: a new firewall table goes live only with a way back already armed.
//!
//! 1. The table as it is now is saved (`nft list table`) to `firewall-previous.nft`, prefixed
//!    so that loading it replaces whatever is there (or removes the table if there was none).
//! 2. A transient systemd timer is armed to load that file after `after` seconds. It lives in
//!    PID 1, not in this process, so it fires whatever happens to us: killed, hung, or cut
//!    off along with the operator's session.
//! 3. The new table is loaded in one `nft -f` transaction, then `confirm` checks the host.
//! 4. Only when that passed is the timer stopped. A failed load or confirm restores the
//!    previous table at once instead of waiting for the timer.
//!
//! A timer still armed when we start means an earlier run died before confirming: the saved
//! file then holds the last confirmed table and is kept, not overwritten by the unconfirmed
//! one now live.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::engine::atomic::write_plain;
use crate::engine::context::Context;
use crate::sys::nft::{self, RESET};
use crate::engine::runner::Cmd;

pub const UNIT: &str = "bootstrap-firewall-rollback";
/// An absolute path, as systemd runs it later, without our PATH.
pub const NFT_BIN: &str = "/usr/sbin/nft";

pub fn previous_path(cx: &Context) -> PathBuf {
    cx.state_dir().join("firewall-previous.nft")
}

pub fn next_path(cx: &Context) -> PathBuf {
    cx.state_dir().join("firewall-next.nft")
}

/// Replace our table with `script` under the guard described above.
pub fn load(cx: &Context, script: &str, after: Duration, confirm: impl FnOnce() -> Result<()>) -> Result<()> {
    let run = |c: Cmd| cx.runner.run(&c);
    let check = |c: Cmd| cx.runner.check(&c).map(drop);
    let timer = format!("{UNIT}.timer");
    let prev = previous_path(cx);
    let armed = run(Cmd::new("systemctl").args(["is-active", "--quiet", &timer]))?.success();
    if armed {
        check(Cmd::new("systemctl").args(["stop", &timer]))?;
    } else {
        let out = run(Cmd::new("nft").args(["list", "table", "inet", "bootstrap"]))?;
        let saved = match out.success() {
            true => format!("{RESET}{}", out.stdout),
            false if nft::is_absent(&out.stderr) => RESET.to_string(),
            false => bail!("cannot save the current table: {}", out.message()),
        };
        write_plain(&prev, saved.as_bytes(), 0o600)?;
    }
    let prev_s = prev.to_string_lossy().to_string();
    check(
        Cmd::new("systemd-run")
            .arg(format!("--unit={UNIT}"))
            .arg(format!("--on-active={}", after.as_secs()))
            // Fire on time (the default accuracy is a minute), and leave nothing behind.
            .args(["--timer-property=AccuracySec=1s", "--timer-property=RemainAfterElapse=no"])
            .args(["--collect", "--quiet", "--description=bootstrap: restore the firewall table of before the last run"])
            .args([NFT_BIN, "-f", &prev_s]),
    )
    .map_err(|e| anyhow!("cannot arm the rollback timer, so the new table was not loaded: {e}"))?;

    let next = next_path(cx);
    let result = write_plain(&next, script.as_bytes(), 0o600)
        .and_then(|_| check(Cmd::new("nft").arg("-f").arg(next.to_string_lossy())))
        .and_then(|_| confirm());
    let _ = std::fs::remove_file(&next);
    match result {
        Ok(()) => check(Cmd::new("systemctl").args(["stop", &timer]))
            .map_err(|e| anyhow!("the new table is live but the rollback timer could not be stopped (it will restore the previous table in {}s): {e}", after.as_secs())),
        Err(e) => match check(Cmd::new("nft").args(["-f", &prev_s])) {
            Ok(()) => {
                let _ = check(Cmd::new("systemctl").args(["stop", &timer]));
                Err(e.context("the previous table was restored"))
            }
            Err(e2) => Err(e.context(format!(
                "restoring the previous table failed too ({e2}); the rollback timer retries in {}s",
                after.as_secs()
            ))),
        },
    }
}
