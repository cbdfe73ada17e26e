//! `bootstrap status`: roles, the last run, the schedule and its next run, pending
//! notifications. Exit 1 when the last run failed, so monitoring can call it.

use anyhow::Result;
use chrono::{Local, TimeZone};
use states::engine::report::{RunReport, Status};

use states::engine::layout::Layout;

use crate::cli::Opts;
use crate::output::printable;
use crate::{node, report_file, schedule};

pub fn show(opts: &Opts) -> Result<i32> {
    let root = &opts.root;
    let roles = node::recorded_roles(root)?;
    println!(
        "roles:    {}",
        roles.map_or("none recorded (not installed: run `bootstrap app`, `db` or `app db`)".into(), |r| r.join(" "))
    );
    let layout = Layout::new(root);
    if let Ok(v) = crate::self_update::installed_version(&layout) {
        let prev = crate::self_update::swap::version_of(&layout.previous_binary())
            .map_or(String::new(), |p| format!("; previous {p} kept for `self-update --rollback`"));
        println!("binary:   bootstrap {v}{prev}");
    }
    let mut code = 0;
    if let Some(n) = node::load(root)?.filter(|n| n.site_url.is_some()) {
        let mut r = states::pipeline::bundle::record(&Layout::new(root));
        // The last run's report knows when the server last answered (even a 304).
        if let Some(fetched) = report_file::load(root).and_then(|l| l.site).and_then(|s| s.fetched_at) {
            r.fetched_at = r.fetched_at.max(Some(fetched));
        }
        let at = |s: Option<u64>| {
            s.and_then(|s| Local.timestamp_opt(s as i64, 0).single())
                .map_or("never".to_string(), |t| t.format("%Y-%m-%d %H:%M:%S %Z").to_string())
        };
        let url = states::sys::http::shown(n.site_url.as_deref().unwrap_or_default());
        let serial = r.serial.map_or("none yet".to_string(), |s| s.to_string());
        println!(
            "site:     bundle serial {serial} from {url}; fetched {}, verified {}",
            at(r.fetched_at),
            at(r.verified_at)
        );
        if let Some(e) = &r.error {
            // Text from the server or a tool, kept on disk: escaped like all such text.
            let e = printable(e);
            println!("  failed: the last attempt to get a newer bundle: {e} (the last good one is in use)");
            code = 1;
        }
    }
    if let Some(at) = crate::drain::since(root) {
        let when = Local.timestamp_opt(at as i64, 0).single().map(|t| t.format("%Y-%m-%d %H:%M:%S %Z").to_string());
        println!(
            "service:  drained since {} (no floating IP, no SRV record); `bootstrap undrain` returns it",
            when.unwrap_or_default()
        );
    }
    if let Some(at) = crate::decommission::since(root) {
        let when = Local.timestamp_opt(at as i64, 0).single().map(|t| t.format("%Y-%m-%d %H:%M:%S %Z").to_string());
        let left = if schedule::next_run(root).is_some() {
            "removing its records is not finished: the schedule retries"
        } else {
            "its records and schedule are gone"
        };
        println!(
            "fleet:    left: decommissioned {} ({left}); `bootstrap ROLE…` installs it again",
            when.unwrap_or_default()
        );
    }
    // Patroni's answers: member names and states are its text.
    for line in crate::db_status::lines(root) {
        println!("{}", printable(&line));
    }
    match report_file::load(root) {
        None => println!("last run: none"),
        Some(r) => {
            print!("{}", last_run(&r));
            if r.has_failures() {
                code = 1;
            }
        }
    }
    match schedule::next_run(root) {
        Some((expr, next)) => {
            println!("schedule: `{expr}` in {}; next run {}", schedule::CRON_FILE, next.format("%Y-%m-%d %H:%M %Z"))
        }
        None => println!("schedule: none ({} missing)", schedule::CRON_FILE),
    }
    for (path, names, until, issuer) in certificates(root) {
        let left = until.duration_since(std::time::SystemTime::now()).map_or(0, |d| d.as_secs() / 86400);
        let until = chrono::DateTime::<chrono::Local>::from(until).format("%Y-%m-%d");
        let (names, issuer) = (printable(&names.join(", ")).into_owned(), printable(&issuer).into_owned());
        println!("tls:      {} for {names} until {until} ({left} days), issuer {issuer}", path.display());
    }
    let pending = std::fs::read_to_string(Layout::new(root).pending_notifications())
        .ok()
        .and_then(|t| serde_json::from_str::<Vec<states::engine::notify::Notification>>(&t).ok())
        .unwrap_or_default();
    if pending.is_empty() {
        println!("pending:  none");
    } else {
        let list: Vec<String> = pending.iter().map(ToString::to_string).collect();
        println!("pending:  {} (carried out by the next run)", list.join(", "));
    }
    Ok(code)
}

/// The last run: counts, then each failure with its error. Errors hold tools' text (and the
/// report is a file on disk): control and invisible characters come out escaped.
fn last_run(r: &RunReport) -> String {
    let when = Local.timestamp_opt(r.started as i64, 0).single().map(|t| t.format("%Y-%m-%d %H:%M:%S %Z").to_string());
    let mut out = format!(
        "last run: {} ({:.0} ms): {} states, {} changed ({} drift corrected), {} failed, {} skipped\n",
        when.unwrap_or_default(),
        r.duration_ms,
        r.states.len(),
        r.changed,
        r.states.iter().filter(|s| s.change == Some(states::engine::report::ChangeKind::Drift)).count(),
        r.failed,
        r.skipped
    );
    for s in r.states.iter().filter(|s| s.status == Status::Failed) {
        let line = format!("  failed: {} ({} {}): {}\n", s.id, s.kind, s.target, s.error.as_deref().unwrap_or(""));
        out.push_str(&printable(&line));
    }
    for n in r.notifications.iter().filter(|n| n.status == Status::Failed) {
        out.push_str(&printable(&format!("  failed: {}: {}\n", n.notification, n.error.as_deref().unwrap_or(""))));
    }
    out
}

/// Certificates haproxy serves (`/etc/haproxy/certs/*.pem`), with names, expiry and issuer.
fn certificates(root: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<String>, std::time::SystemTime, String)> {
    let dir = Layout::new(root).path("/etc/haproxy/certs");
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pem"))
        .filter_map(|p| states::kinds::certificate::expiry(&p).map(|(n, t, i)| (p, n, t, i)))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

#[cfg(test)]
mod tests {
    use states::engine::report::{Mode, NotificationReport, RunReport, StateReport, Status};

    #[test]
    fn a_reports_errors_are_shown_escaped() {
        let root = tempfile::tempdir().unwrap();
        let failed = StateReport {
            id: "conf".into(),
            kind: "file".into(),
            target: "/etc/app.conf".into(),
            status: Status::Failed,
            changes: Vec::new(),
            error: Some("rejected: \u{1b}[2J\u{1b}]0;owned\u{7}all good \u{202E}dab".into()),
            duration_ms: 1.0,
            fingerprint: String::new(),
            change: None,
        };
        let note = NotificationReport {
            notification: "reload app".into(),
            status: Status::Failed,
            error: Some("exit 1: \u{200B}\u{1b}[31m".into()),
        };
        let report = RunReport {
            mode: Mode::Apply,
            started: 0,
            duration_ms: 1.0,
            states: vec![failed],
            notifications: vec![note],
            unchanged: 0,
            changed: 0,
            pending: 0,
            failed: 1,
            skipped: 0,
            site: None,
        };
        crate::report_file::write(root.path(), &report).unwrap();
        let shown = super::last_run(&crate::report_file::load(root.path()).expect("the report file"));
        assert!(!shown.contains(['\u{1b}', '\u{7}', '\u{202E}', '\u{200B}']), "{shown:?}");
        assert!(shown.contains("rejected: \\u{1b}[2J\\u{1b}]0;owned\\u{7}all good \\u{202e}dab\n"), "{shown}");
        assert!(shown.contains("  failed: reload app: exit 1: \\u{200b}\\u{1b}[31m\n"), "{shown}");
    }
}
