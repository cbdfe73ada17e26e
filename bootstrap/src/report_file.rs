//! The last-run report (`/var/lib/bootstrap/last-run.json`, root-only) and, where a node
//! exporter's textfile directory exists, `bootstrap.prom`. Changes are classified by comparing
//! each state's fingerprint with the last run's: the same desired state changed again is drift.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use states::engine::layout::Layout;
use states::engine::report::{ChangeKind, RunReport, Status};
use states::role::Fingerprints;

pub fn path(root: &Path) -> PathBuf {
    Layout::new(root).last_run()
}

pub fn load(root: &Path) -> Option<RunReport> {
    serde_json::from_slice(&std::fs::read(path(root)).ok()?).ok()
}

/// Fill in fingerprints and, for changed states, whether the change corrected drift.
pub fn classify(report: &mut RunReport, fingerprints: &Fingerprints, previous: Option<&RunReport>) {
    let before: HashMap<&str, (&str, Status)> = previous
        .map(|p| p.states.iter().map(|s| (s.id.as_str(), (s.fingerprint.as_str(), s.status))).collect())
        .unwrap_or_default();
    for s in &mut report.states {
        s.fingerprint = fingerprints.get(&s.id).cloned().unwrap_or_default();
        if matches!(s.status, Status::Changed | Status::Pending) {
            let converged_before = matches!(before.get(s.id.as_str()),
                Some((fp, st)) if *fp == s.fingerprint && matches!(st, Status::Unchanged | Status::Changed));
            s.change = Some(if converged_before { ChangeKind::Drift } else { ChangeKind::Intended });
        }
    }
}

pub fn write(root: &Path, report: &RunReport) -> Result<()> {
    states::engine::atomic::write_plain(&path(root), &serde_json::to_vec_pretty(report)?, 0o600)?;
    let layout = Layout::new(root);
    if layout.metrics_dir().is_dir() {
        states::engine::atomic::write_plain(&layout.metrics_file(), prometheus(report).as_bytes(), 0o644)?;
    }
    Ok(())
}

fn prometheus(r: &RunReport) -> String {
    let mut s = String::new();
    if let Some(site) = &r.site {
        let _ = writeln!(s, "# HELP bootstrap_site_bundle_serial The serial of the site bundle in use.");
        let _ = writeln!(s, "# TYPE bootstrap_site_bundle_serial gauge");
        let _ = writeln!(s, "bootstrap_site_bundle_serial {}", site.serial.unwrap_or(0));
        let _ =
            writeln!(s, "# HELP bootstrap_site_bundle_failed 1 when the last attempt to get a newer bundle failed.");
        let _ = writeln!(s, "# TYPE bootstrap_site_bundle_failed gauge");
        let _ = writeln!(s, "bootstrap_site_bundle_failed {}", u8::from(site.error.is_some()));
    }
    let drift = r.states.iter().filter(|s| s.change == Some(ChangeKind::Drift)).count();
    let pending = r.notifications.iter().filter(|n| n.status != Status::Changed).count();
    let _ = writeln!(s, "# HELP bootstrap_last_run_timestamp_seconds When the last run started.");
    let _ = writeln!(s, "# TYPE bootstrap_last_run_timestamp_seconds gauge");
    let _ = writeln!(s, "bootstrap_last_run_timestamp_seconds {}", r.started);
    let _ = writeln!(s, "# TYPE bootstrap_last_run_duration_seconds gauge");
    let _ = writeln!(s, "bootstrap_last_run_duration_seconds {}", r.duration_ms / 1000.0);
    let _ = writeln!(s, "# HELP bootstrap_last_run_states States of the last run by result.");
    let _ = writeln!(s, "# TYPE bootstrap_last_run_states gauge");
    for (status, n) in
        [("unchanged", r.unchanged), ("changed", r.changed), ("failed", r.failed), ("skipped", r.skipped)]
    {
        let _ = writeln!(s, "bootstrap_last_run_states{{status=\"{status}\"}} {n}");
    }
    let _ = writeln!(s, "# TYPE bootstrap_last_run_drift_corrected gauge");
    let _ = writeln!(s, "bootstrap_last_run_drift_corrected {drift}");
    let _ = writeln!(s, "# TYPE bootstrap_last_run_success gauge");
    let _ = writeln!(s, "bootstrap_last_run_success {}", u8::from(!r.has_failures()));
    let _ = writeln!(s, "# TYPE bootstrap_pending_notifications gauge");
    let _ = writeln!(s, "bootstrap_pending_notifications {pending}");
    s
}
