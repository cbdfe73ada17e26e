//! `bootstrap`: one static binary that turns a fresh VM into a fleet node and keeps it so.

mod cli;
mod converge;
mod db_status;
mod decommission;
mod derived_secrets;
mod drain;
mod embedded;
mod execute;
mod inputs;
mod install;
mod lock;
mod logging;
mod mark;
mod node;
mod output;
mod own_files;
mod preflight;
mod prompt;
mod report_file;
mod run;
mod schedule;
mod secret_cmd;
mod secret_sources;
mod self_update;
mod settings;
mod site_bundle;
mod site_cmd;
mod status;
mod trusted_dir;

use anyhow::bail;
use clap::Parser;

use cli::{Cli, Command, SecretCommand, SiteCommand};

/// musl's own allocator maps and unmaps memory for much of what a run allocates (templates,
/// TOML, JSON): about a third of a no-op run's time went to it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    secret_sources::take_from_environment();
    states::sys::http::install_tls_provider();
    logging::init();
    let cli = Cli::parse();
    let opts = &cli.opts;
    let result = match &cli.command {
        Some(Command::Apply { roles }) => converge::converge(opts, roles),
        Some(
            Command::Secret(_)
            | Command::Status
            | Command::Site(_)
            | Command::SelfUpdate { .. }
            | Command::Drain
            | Command::Undrain,
        ) if opts.check => {
            Err(anyhow::anyhow!("--check is for converging (`bootstrap --check`); this command only acts or reports (`decommission --check` shows what it would remove)"))
        }
        Some(Command::Secret(SecretCommand::Set { name })) => secret_cmd::set(opts, name),
        Some(Command::Decommission) => decommission::run(opts),
        Some(Command::Drain) => drain::set(opts, true),
        Some(Command::Undrain) => drain::set(opts, false),
        Some(Command::Status) => status::show(opts),
        Some(Command::Site(SiteCommand::Keygen { dir })) => site_cmd::keygen(dir),
        Some(Command::Site(SiteCommand::Pack { dir, key, out, serial })) => site_cmd::pack(dir, key, out, *serial),
        Some(Command::SelfUpdate { to, rollback, allow_downgrade, release_url }) => {
            let req = self_update::Request {
                to: to.clone(),
                rollback: *rollback,
                allow_downgrade: *allow_downgrade,
                release_url: release_url.clone(),
            };
            self_update::command(opts, &req)
        }
        None if opts.check => converge::converge(opts, &cli.roles),
        None if cli.roles.is_empty() => refuse_without_roles(opts),
        None => install::first_install(opts, &cli.roles),
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(target: logging::JOURNAL_ONLY, "{e:#}");
            eprintln!("error: {}", output::printable(&format!("{e:#}")));
            1
        }
    };
    std::process::exit(code);
}

/// A first install names its roles: never guess one.
fn refuse_without_roles(opts: &cli::Opts) -> anyhow::Result<i32> {
    let names = inputs::source(opts, None)?.role_names();
    bail!(
        "name the roles for this node: `bootstrap app`, `bootstrap db` or `bootstrap app db` \
         (available: {}); `bootstrap apply` converges the recorded ones",
        names.join(", ")
    )
}
