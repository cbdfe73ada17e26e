//! Logs: to journald (with fields such as the state id and its status) when the journal socket
//! exists, and to stderr: warnings only when journald or a terminal has the details, everything
//! at info otherwise. `BOOTSTRAP_LOG=debug` shows every command run.

use std::io::IsTerminal;
use std::path::Path;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

pub fn init() {
    let journald = Path::new("/run/systemd/journal/socket")
        .exists()
        .then(|| tracing_journald::layer().ok())
        .flatten()
        .map(|l| l.with_syslog_identifier("bootstrap".into()));
    let quiet = journald.is_some() || std::io::stderr().is_terminal();
    let level = match std::env::var("BOOTSTRAP_LOG").as_deref() {
        Ok("trace") => LevelFilter::TRACE,
        Ok("debug") => LevelFilter::DEBUG,
        Ok("info") => LevelFilter::INFO,
        Ok("warn") => LevelFilter::WARN,
        _ if quiet => LevelFilter::WARN,
        _ => LevelFilter::INFO,
    };
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).without_time().with_filter(level);
    let journal_level = level.max(LevelFilter::INFO);
    tracing_subscriber::registry().with(stderr).with(journald.map(|j| j.with_filter(journal_level))).init();
}
