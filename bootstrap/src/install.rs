//! The first install (`./bootstrap app`): preflight, settings and secrets (asked on a terminal
//! when missing), every state compiled, and only then: record site, secrets and roles, install
//! the binary as /usr/local/sbin/bootstrap, and converge. The role's schedule state keeps it so.

use std::path::Path;

use anyhow::{Context as _, Result};
use states::engine::layout::Layout;
use states::engine::report::Mode;
use states::pipeline::{self, Peers};

use crate::cli::Opts;
use crate::execute::{execute, Record};
use crate::{decommission, inputs, node, preflight, run, secret_sources, self_update, settings};

pub fn first_install(opts: &Opts, roles: &[String]) -> Result<i32> {
    refuse_unknown_roles(opts, roles)?;
    preflight::check(&opts.root)?;
    run::with_inputs(opts, roles, true, |inputs| {
        let mut prepared = pipeline::prepare(inputs.pipeline(opts, Peers::Discover { persist: true })?)?;
        prepared.nodes.extend(self_update::pin::node(&inputs.values));
        prepared.nodes.push(crate::own_files::node());
        settings::store(&opts.root, &inputs.site)?;
        secret_sources::store(&opts.root, &inputs.secret_values)?;
        let roles_dir = inputs::roles_dir(opts).map(|d| std::path::absolute(&d)).transpose()?;
        let (site_url, site_key) = inputs.site_origin.clone().map(|o| (o.url, o.key)).unzip();
        node::store(&opts.root, &node::NodeFile { roles: inputs.roles.clone(), roles_dir, site_url, site_key })?;
        install_binary(&opts.root)?;
        decommission::forget(&opts.root)?;
        execute(opts, prepared, Mode::Apply, Record::Yes)
    })
}

/// A name that is no role (a typo, a command this version lacks) stops before the preflight or
/// anything else. The roles a followed site bundle brings are known only once it is fetched,
/// so with `--site-key` the check is the role loader's.
fn refuse_unknown_roles(opts: &Opts, roles: &[String]) -> Result<()> {
    if opts.site_key.is_some() {
        return Ok(());
    }
    let names = inputs::source(opts, None)?.role_names();
    let unknown: Vec<&str> = roles.iter().map(String::as_str).filter(|r| !names.iter().any(|n| n == r)).collect();
    if !unknown.is_empty() {
        anyhow::bail!(
            "`{}` is neither a role nor a command: the roles are {}; the commands are in `bootstrap --help`",
            unknown.join("`, `"),
            names.join(", ")
        );
    }
    Ok(())
}

/// Copy the running binary to /usr/local/sbin/bootstrap (0755, atomically) unless it is there.
pub fn install_binary(root: &Path) -> Result<()> {
    let me = std::env::current_exe().context("cannot find the running binary")?;
    let dest = Layout::new(root).installed();
    let bytes = std::fs::read(&me).with_context(|| format!("cannot read {}", me.display()))?;
    if std::fs::read(&dest).ok().as_deref() == Some(bytes.as_slice()) {
        return Ok(());
    }
    states::engine::atomic::write_plain(&dest, &bytes, 0o755)?;
    tracing::info!(path = %dest.display(), "installed the binary");
    Ok(())
}
