//! `apply` and `--check`: load the roles, settings and secrets, compile the states (every
//! input error surfaces here, before anything changes), run the engine, report.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{bail, Result};
use serde_json::json;
use states::engine;
use states::facts::Facts;
use states::notify::SystemdNotifier;
use states::report::Mode;
use states::role::{self, DirSource, EmbeddedSource, RoleSource};
use states::runner::SystemRunner;
use states::template::Templates;
use states::Context;

use crate::cli::{Color, Opts};
use crate::output::{self, Painter};
use crate::{embedded, lock, node, secret_sources, settings};

/// Run the roles and return the process exit code.
pub fn converge(opts: &Opts, roles: &[String]) -> Result<i32> {
    let source: Box<dyn RoleSource> = match &opts.roles_dir {
        Some(dir) => Box::new(DirSource(dir.clone())),
        None => Box::new(EmbeddedSource(embedded::FILES)),
    };
    let roles = choose_roles(&opts.root, roles, &*source)?;
    let set = role::load(&*source, &roles)?;
    let site = settings::load(&opts.root, opts.site.as_deref())?;
    let secrets = secret_sources::collect(&opts.root, opts.secrets_file.as_deref(), &set.secrets)?;
    let scrubber = secrets.clone();
    run_roles(opts, set, &*source, site, secrets)
        // An error from a tool may quote a file it read: no secret value leaves this way.
        .map_err(|e| anyhow::anyhow!("{}", scrubber.scrub(&format!("{e:#}"))))
}

fn run_roles(
    opts: &Opts,
    set: role::RoleSet,
    source: &dyn RoleSource,
    site: toml::Table,
    secrets: states::secrets::Secrets,
) -> Result<i32> {
    let cx = Context {
        facts: Facts::gather(&opts.root),
        settings: role::settings_json(&set.settings, &site),
        secrets,
        runner: Box::new(SystemRunner),
        root: opts.root.clone(),
        shared: Default::default(),
    };
    let data = json!({ "facts": cx.facts, "settings": cx.settings, "roles": set.roles });
    let mut templates = Templates::new(&cx.secrets);
    let nodes = role::compile(set, source, &cx, &mut templates, &data)?;

    let _lock = match lock::acquire(&opts.root, !opts.check)? {
        Some(lock::Lock::Busy) => {
            eprintln!("another bootstrap run holds {}; not running", lock::LOCK_FILE);
            return Ok(lock::BUSY);
        }
        held => held,
    };
    let mode = if opts.check { Mode::Check } else { Mode::Apply };
    let painter = Painter { color: use_color(opts.color) };
    let mut stdout = std::io::stdout().lock();
    let report = engine::run(&cx, &nodes, mode, &SystemdNotifier, &mut |r| {
        tracing::info!(state = %r.id, kind = %r.kind, status = ?r.status, "state");
        if !opts.json {
            if let Some(line) = output::state_line(&painter, r, opts.verbose) {
                let _ = stdout.write_all(cx.secrets.scrub(&line).as_bytes());
            }
        }
    })?;
    let text = if opts.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        output::summary(&painter, &report)
    };
    stdout.write_all(cx.secrets.scrub(&text).as_bytes())?;
    stdout.flush()?;
    Ok(report.exit_code())
}

/// The roles given, or those recorded on the node; never a guess.
fn choose_roles(root: &Path, given: &[String], source: &dyn RoleSource) -> Result<Vec<String>> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    match node::recorded_roles(root)? {
        Some(r) if !r.is_empty() => Ok(r),
        _ => bail!(
            "no roles given and none recorded in {}; name them, e.g. `bootstrap app` (available: {})",
            node::NODE_FILE,
            source.role_names().join(", ")
        ),
    }
}

fn use_color(c: Color) -> bool {
    match c {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    }
}
