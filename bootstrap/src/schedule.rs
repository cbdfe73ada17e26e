//! The 15-minute schedule: a cron expression offset by a per-host splay derived from
//! /etc/machine-id, so a fleet does not run in the same second; and the next run for `status`.

use std::path::Path;

use anyhow::{bail, Result};
use sha2::{Digest, Sha256};
use states::engine::layout::Layout;

pub use states::engine::layout::CRON_FILE;

/// Intervals that divide an hour evenly, so the schedule is regular across hour boundaries.
const INTERVALS: &[i64] = &[1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60];

/// `M-59/N * * * *` where `M` is this host's offset within the interval.
pub fn expression(root: &Path, minutes: i64) -> Result<String> {
    if !INTERVALS.contains(&minutes) {
        bail!("setting `schedule_minutes` must divide an hour: one of {INTERVALS:?}, not {minutes}");
    }
    if minutes == 1 {
        return Ok("* * * * *".into());
    }
    let id = std::fs::read_to_string(Layout::new(root).path("/etc/machine-id"))
        .or_else(|_| std::fs::read_to_string("/etc/machine-id"))
        .unwrap_or_default();
    let h = Sha256::digest(id.trim().as_bytes());
    let offset = u16::from_be_bytes([h[0], h[1]]) as i64 % minutes;
    Ok(if minutes == 60 { format!("{offset} * * * *") } else { format!("{offset}-59/{minutes} * * * *") })
}

/// The schedule in the installed cron file, and when it next fires.
pub fn next_run(root: &Path) -> Option<(String, chrono::DateTime<chrono::Local>)> {
    let text = std::fs::read_to_string(Layout::new(root).cron_file()).ok()?;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#') && !l.contains('='))?;
    let expr: Vec<&str> = line.split_whitespace().take(5).collect();
    let expr = expr.join(" ");
    let cron: croner::Cron = expr.parse().ok()?;
    let next = cron.find_next_occurrence(&chrono::Local::now(), false).ok()?;
    Some((expr, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splay_is_stable_and_in_range() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/machine-id"), "0123456789abcdef0123456789abcdef\n").unwrap();
        let e = expression(d.path(), 15).unwrap();
        assert_eq!(e, expression(d.path(), 15).unwrap());
        let offset: i64 = e.split('-').next().unwrap().parse().unwrap();
        assert!((0..15).contains(&offset), "{e}");
        assert!(e.ends_with("-59/15 * * * *"), "{e}");
        assert_eq!(expression(d.path(), 1).unwrap(), "* * * * *");
        assert!(expression(d.path(), 7).is_err());
    }
}
