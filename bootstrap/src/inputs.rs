//! Everything a run needs before it may touch the system: the roles, validated settings and
//! the secrets. A first install may ask for what is missing on a terminal; scheduled runs never
//! prompt. Any problem here stops the run with nothing changed.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use states::engine::secrets::Secrets;
use states::pipeline::{self, Peers};
use states::role::settings;
use states::role::{self, DirSource, EmbeddedSource, RoleSet, RoleSource};

use crate::cli::Opts;
use crate::{embedded, node, prompt, schedule, secret_sources, settings as site};

pub struct Inputs {
    pub source: Box<dyn RoleSource>,
    pub roles: Vec<String>,
    pub set: RoleSet,
    /// The site settings as given (and answered), to record on the node.
    pub site: toml::Table,
    /// Resolved values: the site's, else the roles' defaults.
    pub values: toml::Table,
    /// Every secret the roles declare (plus any other stored ones), to record on the node.
    pub secret_values: BTreeMap<String, String>,
    /// Secrets a dry run was not given.
    pub missing_secrets: Vec<String>,
}

impl Inputs {
    /// The pipeline's inputs for this node (the role set moves into them): settings, secrets,
    /// the schedule's cron fields with this host's splay.
    pub fn pipeline(&mut self, opts: &Opts, peers: Peers) -> Result<pipeline::Inputs<'_>> {
        let minutes = self.values.get("schedule_minutes").and_then(|v| v.as_integer()).unwrap_or(15);
        let mut p =
            pipeline::Inputs::new(opts.root.clone(), &*self.source, self.roles.clone(), std::mem::take(&mut self.set));
        p.values = self.values.clone();
        p.secrets = self.secrets();
        p.schedule_cron = schedule::expression(&opts.root, minutes)?;
        p.peers = peers;
        Ok(p)
    }

    pub fn secrets(&self) -> Secrets {
        Secrets::new(self.secret_values.clone()).with_missing(self.missing_secrets.iter().cloned())
    }
}

/// `--roles DIR`, else the directory recorded at install, else the embedded roles.
pub fn source(opts: &Opts) -> Box<dyn RoleSource> {
    match roles_dir(opts) {
        Some(dir) => Box::new(DirSource(dir)),
        None => Box::new(EmbeddedSource(embedded::FILES)),
    }
}

pub fn roles_dir(opts: &Opts) -> Option<std::path::PathBuf> {
    opts.roles_dir.clone().or_else(|| node::load(&opts.root).ok().flatten().and_then(|n| n.roles_dir))
}

/// The roles given, or those recorded on the node; never a guess.
pub fn choose_roles(opts: &Opts, given: &[String], source: &dyn RoleSource) -> Result<Vec<String>> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    match node::recorded_roles(&opts.root)? {
        Some(r) if !r.is_empty() => Ok(r),
        _ => bail!(
            "no roles given and none recorded in {}; name them, e.g. `bootstrap app` (available: {})",
            node::NODE_FILE,
            source.role_names().join(", ")
        ),
    }
}

/// Gather and check the inputs. A first install (`install`) asks on a terminal for what is
/// missing and generates the secrets a role allows to generate; other runs never prompt.
pub fn gather(opts: &Opts, roles: &[String], install: bool) -> Result<Inputs> {
    let source = source(opts);
    let roles = choose_roles(opts, roles, &*source)?;
    let set = role::load(&*source, &roles)?;
    let (mut site_table, origin) = site::load(&opts.root, opts.site.as_deref(), opts.site_sha256.as_deref())?;
    let known = role::known_settings(&*source, &set)?;
    let ask = install && prompt::interactive();

    let mut resolved = settings::resolve(&set.settings, &known, &site_table, &origin)?;
    if ask {
        // A first install on a terminal confirms every required setting the site did not give.
        let unanswered: Vec<_> =
            set.settings.iter().filter(|(n, s)| s.required && !site_table.contains_key(*n)).collect();
        for (name, spec) in unanswered {
            let v = prompt::setting(name, spec)?;
            site_table.insert(name.clone(), v);
        }
        resolved = settings::resolve(&set.settings, &known, &site_table, &origin)?;
    }
    if !resolved.missing.is_empty() {
        bail!(
            "required settings missing: {}. Give them in a site file (--site FILE) or answer the prompts on a terminal. Nothing was changed.",
            resolved.missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
        );
    }

    // Secrets the settings make unnecessary (`when`) are neither asked for nor required.
    let t = states::role::template::Templates::new(&Secrets::default());
    let settings_data = settings::template_data(&set.settings, &resolved.values);
    let mut needed = Vec::new();
    for spec in &set.secrets {
        if spec.needed(&t, &settings_data)? {
            needed.push(spec.clone());
        }
    }
    let (mut secret_values, missing) = secret_sources::available(&opts.root, opts.secrets_file.as_deref(), &needed)?;
    // An install without a terminal generates what the role allows to generate (and stores
    // it); a dry run stands in a throwaway value, never stored, so it can plan a fresh node.
    // Any other missing secret stops the run (a scheduled run has them all stored), except a
    // dry run: it plans the rest and shows what needs the secret as pending.
    let (generated, mut missing): (Vec<_>, Vec<_>) =
        missing.into_iter().partition(|s| s.generate && ((install && !ask) || opts.check));
    let mut missing_secrets = Vec::new();
    if opts.check && !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|s| format!("`{}`", s.name)).collect();
        eprintln!("dry run without secret {}: the states that need it are shown as pending", names.join(", "));
        missing_secrets = missing.drain(..).map(|s| s.name).collect();
    }
    if !missing.is_empty() && !ask {
        return Err(secret_sources::missing_error(&missing));
    }
    for spec in &generated {
        secret_values.insert(spec.name.clone(), prompt::generate()?);
    }
    for spec in &missing {
        secret_values.insert(spec.name.clone(), prompt::secret(spec)?);
    }
    Ok(Inputs { source, roles, set, site: site_table, values: resolved.values, secret_values, missing_secrets })
}
