//! Logs: to journald (with fields such as the state id and its status) when the journal socket
//! exists, and to stderr: warnings only when journald or a terminal has the details, everything
//! at info otherwise. `BOOTSTRAP_LOG=debug` shows every command run.

use std::io::IsTerminal;
use std::path::Path;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The target of log lines meant for the journal only.
pub const JOURNAL_ONLY: &str = "bootstrap::journal";

pub fn init() {
    let journald = Path::new("/run/systemd/journal/socket")
        .exists()
        .then(|| tracing_journald::layer().ok())
        .flatten()
        // Fields as README documents them (`STATE=landing-page`), not `F_STATE`.
        .map(|l| l.with_syslog_identifier("bootstrap".into()).with_field_prefix(None));
    let quiet = journald.is_some() || std::io::stderr().is_terminal();
    let level = match std::env::var("BOOTSTRAP_LOG").as_deref() {
        Ok("trace") => LevelFilter::TRACE,
        Ok("debug") => LevelFilter::DEBUG,
        Ok("info") => LevelFilter::INFO,
        Ok("warn") => LevelFilter::WARN,
        _ if quiet => LevelFilter::WARN,
        _ => LevelFilter::INFO,
    };
    // An error the command prints itself (`error: …`) goes to the journal only, not twice to
    // the terminal.
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .without_time()
        .with_filter(level)
        .with_filter(tracing_subscriber::filter::filter_fn(|m| m.target() != JOURNAL_ONLY));
    let journal_level = level.max(LevelFilter::INFO);
    tracing_subscriber::registry().with(stderr).with(journald.map(|j| j.with_filter(journal_level))).init();
}
