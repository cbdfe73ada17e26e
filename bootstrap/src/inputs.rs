//! Everything a run needs before it may touch the system: the roles, validated settings and
//! the secrets. A first install may ask for what is missing on a terminal; scheduled runs never
//! prompt. Any problem here stops the run with nothing changed.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use states::engine::report::SiteStatus;
use states::engine::secrets::Secrets;
use states::pipeline::bundle::{Candidate, Current, Origin};
use states::pipeline::{self, Peers};
use states::role::settings;
use states::role::{self, DirSource, EmbeddedSource, Layered, RoleSet, RoleSource, SecretSpec};

use crate::cli::Opts;
use crate::{embedded, node, prompt, schedule, secret_sources, settings as site, site_bundle};

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
    /// Secrets derived from others (never stored): computed whenever the secrets are used,
    /// so a rotated fleet secret changes them all.
    pub derived: Vec<SecretSpec>,
    /// Values rotated out during this command (`secret set`): scrubbed like the others.
    pub retired: Vec<String>,
    /// The site bundle in use (kept: a dry run's may live in a scratch directory).
    _bundle: Option<Current>,
    /// What the report says of the bundle.
    pub site_status: Option<SiteStatus>,
    /// Where the bundle comes from (recorded at install).
    pub site_origin: Option<Origin>,
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
        p.site = self.site_status.clone();
        Ok(p)
    }

    pub fn secrets(&self) -> Secrets {
        let mut values = self.secret_values.clone();
        let missing = crate::derived_secrets::add(&self.derived, &mut values);
        let mut secrets = Secrets::new(values).with_missing(self.missing_secrets.iter().cloned().chain(missing));
        for old in &self.retired {
            secrets.retire(old.clone());
        }
        secrets
    }
}

/// Role names resolve in the site bundle's roles, then `--roles DIR` (or the directory
/// recorded at install), then the embedded roles: an operator's role includes `app` rather
/// than forking it, and may override an embedded template by name. A roles directory that
/// anyone but root can change is refused (`trusted_dir`).
pub fn source(opts: &Opts, bundle_roles: Option<std::path::PathBuf>) -> Result<Box<dyn RoleSource>> {
    let mut layers: Vec<Box<dyn RoleSource>> = Vec::new();
    layers.extend(bundle_roles.map(|d| Box::new(DirSource(d)) as Box<dyn RoleSource>));
    if let Some(dir) = roles_dir(opts) {
        layers.push(Box::new(DirSource(crate::trusted_dir::check(&dir)?)));
    }
    layers.push(Box::new(EmbeddedSource(embedded::FILES)));
    Ok(Box::new(Layered(layers)))
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

type Followed = Option<((Current, SiteStatus), Origin)>;

/// Gather and check the inputs. A first install (`install`) asks on a terminal for what is
/// missing and generates the secrets a role allows to generate; other runs never prompt.
pub fn gather(opts: &Opts, roles: &[String], install: bool) -> Result<Inputs> {
    // The site bundle first: its roles and settings are what the rest is made of. A newer one
    // must compile for this node before it replaces the last good one; a first install (no
    // good one yet) compiles everything with the answers to its prompts before it changes
    // anything, and a bundle that fails there is replaced by the next one.
    let followed = match site_bundle::origin(opts)? {
        Some(o) => {
            let first = install
                && states::pipeline::bundle::last_good(&states::engine::layout::Layout::new(&opts.root)).is_none();
            let accept = |c: &Candidate| if first { Ok(()) } else { compiles(opts, roles, &o, c) };
            Some((site_bundle::follow(opts, &o, &accept)?, o))
        }
        None => None,
    };
    let inputs = assemble(opts, roles, install, followed)?;
    if opts.check && !inputs.missing_secrets.is_empty() {
        let names: Vec<String> = inputs.missing_secrets.iter().map(|s| format!("`{s}`")).collect();
        eprintln!("dry run without secret {}: the states that need it are shown as pending", names.join(", "));
    }
    Ok(inputs)
}

/// Whether this node's states compile from a candidate bundle (as a dry run: a secret the
/// node lacks stands as a placeholder, never asked for).
fn compiles(opts: &Opts, roles: &[String], origin: &Origin, c: &Candidate) -> Result<()> {
    let opts = Opts { check: true, ..opts.clone() };
    let status = site_bundle::status(origin, &Default::default(), Some(c.serial));
    let mut inputs = assemble(&opts, roles, false, Some(((c.as_current(), status), origin.clone())))?;
    pipeline::prepare(inputs.pipeline(&opts, Peers::Discover { persist: false })?)?;
    Ok(())
}

/// The inputs from a bundle (or none) and the node's own files.
fn assemble(opts: &Opts, roles: &[String], install: bool, followed: Followed) -> Result<Inputs> {
    let source = source(opts, followed.as_ref().map(|((c, _), _)| c.roles_dir()))?;
    let roles = choose_roles(opts, roles, &*source)?;
    let set = role::load(&*source, &roles)?;
    // With a bundle, the node's own site.toml holds only its overrides (per-node values).
    let (given, pin) = match followed {
        Some(_) => (None, None),
        None => (opts.site.as_deref(), opts.site_sha256.as_deref()),
    };
    let (mut site_table, mut origin) = site::load(&opts.root, given, pin)?;
    let fleet = match &followed {
        Some(((current, status), _)) => {
            origin = format!("the site bundle {} (serial {}) or {origin}", status.url, current.serial);
            current.site()?
        }
        None => toml::Table::new(),
    };
    let merged = |local: &toml::Table| {
        let mut m = fleet.clone();
        m.extend(local.clone());
        m
    };
    // Other roles' declarations are read only when the site names a setting these roles don't
    // declare (a shared fleet file): most runs parse no role they don't use.
    let all_declared = merged(&site_table).keys().all(|k| set.settings.contains_key(k));
    let known = if all_declared { set.settings.clone() } else { role::known_settings(&*source, &set)? };
    let ask = install && prompt::interactive();

    let mut resolved = settings::resolve(&set.settings, &known, &merged(&site_table), &origin)?;
    if ask {
        // A first install on a terminal confirms every required setting the site did not give.
        let have = merged(&site_table);
        let unanswered: Vec<_> = set.settings.iter().filter(|(n, s)| s.required && !have.contains_key(*n)).collect();
        for (name, spec) in unanswered {
            let v = prompt::setting(name, spec)?;
            site_table.insert(name.clone(), v);
        }
        resolved = settings::resolve(&set.settings, &known, &merged(&site_table), &origin)?;
    }
    if !resolved.missing.is_empty() {
        bail!(
            "required settings missing: {}. Give them in a site file (--site FILE) or answer the prompts on a terminal. Nothing was changed.",
            resolved.missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
        );
    }

    // Secrets the settings make unnecessary (`when`) are neither asked for nor required.
    let t = states::role::template::Templates::new(&Secrets::default());
    let settings_data = states::role::template::Data::new(
        serde_json::json!({ "settings": settings::template_data(&set.settings, &resolved.values) }),
    );
    let (mut needed, mut derived) = (Vec::new(), Vec::new());
    for spec in &set.secrets {
        if spec.needed(&t, &settings_data)? {
            if spec.derive.is_some() {
                derived.push(spec.clone())
            } else {
                needed.push(spec.clone())
            }
        }
    }
    let (mut secret_values, missing) = secret_sources::available(&opts.root, opts.secrets_file.as_deref(), &needed)?;
    // An install without a terminal generates what the role allows to generate (and stores
    // it); a dry run stands in a throwaway value, never stored, so it can plan a fresh node.
    // Any other missing secret stops the run (a scheduled run has them all stored), except a
    // dry run: it plans the rest and shows what needs the secret as pending.
    let (generated, mut missing): (Vec<_>, Vec<_>) =
        missing.into_iter().partition(|s| s.generate && ((install && !ask) || opts.check));
    // An optional secret left unset is no reason to stop (nor to ask, without a terminal).
    missing.retain(|s| !s.optional || (ask && !opts.check));
    let mut missing_secrets = Vec::new();
    if opts.check && !missing.is_empty() {
        missing_secrets = missing.drain(..).map(|s| s.name).collect();
    }
    if !missing.is_empty() && !ask {
        return Err(secret_sources::missing_error(&missing));
    }
    for spec in &generated {
        secret_values.insert(spec.name.clone(), prompt::generate()?);
    }
    for spec in &missing {
        let value = prompt::secret(spec)?;
        if !value.is_empty() {
            secret_values.insert(spec.name.clone(), value);
        }
    }
    let (bundle, site_status, site_origin) = match followed {
        Some(((current, status), o)) => (Some(current), Some(status), Some(o)),
        None => (None, None, None),
    };
    Ok(Inputs {
        source,
        roles,
        set,
        site: site_table,
        values: resolved.values,
        secret_values,
        missing_secrets,
        derived,
        retired: Vec::new(),
        _bundle: bundle,
        site_status,
        site_origin,
    })
}
