//! `bootstrap`: one static binary that turns a fresh VM into a fleet node and keeps it so.

mod cli;
mod converge;
mod embedded;
mod lock;
mod node;
mod output;
mod secret_sources;
mod settings;

use clap::Parser;

use cli::{Cli, Command};

fn main() {
    states::fetch::install_tls_provider();
    init_logging();
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Apply { roles }) => converge::converge(&cli.opts, roles),
        None => converge::converge(&cli.opts, &cli.roles),
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

/// Logs go to stderr; `BOOTSTRAP_LOG=debug` shows every command run.
fn init_logging() {
    let level = match std::env::var("BOOTSTRAP_LOG").as_deref() {
        Ok("debug") => tracing::Level::DEBUG,
        Ok("info") => tracing::Level::INFO,
        Ok("trace") => tracing::Level::TRACE,
        _ => tracing::Level::WARN,
    };
    tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).without_time().init();
}
