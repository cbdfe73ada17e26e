//! Where secrets come from: the node's stored secrets, `--secrets-file`, systemd credentials
//! (`$CREDENTIALS_DIRECTORY/<name>`), `BOOTSTRAP_SECRET_<NAME>`, or a prompt on a terminal.
//! They are stored in `/etc/bootstrap/secrets.toml`, 0600 in a 0700 directory.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use states::role::SecretSpec;

use states::engine::layout::Layout;

pub fn env_name(name: &str) -> String {
    format!("BOOTSTRAP_SECRET_{}", name.to_uppercase())
}

/// The rules a secret must meet.
pub fn check_secret(spec: &SecretSpec, value: &str) -> Result<()> {
    if value.is_empty() {
        bail!("secret `{}` is empty", spec.name);
    }
    if value.chars().count() < spec.min_length {
        bail!("secret `{}` is shorter than {} characters", spec.name, spec.min_length);
    }
    if let Some(max) = spec.max_length.filter(|m| value.chars().count() > *m) {
        bail!("secret `{}` is longer than {max} characters (the protocol uses no more)", spec.name);
    }
    if value.contains(['\n', '\r']) {
        bail!("secret `{}` must be one line", spec.name);
    }
    Ok(())
}

/// What the non-interactive sources hold for `specs`, later sources overriding earlier ones:
/// stored, `--secrets-file`, credentials, environment. Returns the values and the names of
/// the secrets still missing. Every value found is checked against its rules.
pub fn available(
    root: &Path,
    secrets_file: Option<&Path>,
    specs: &[SecretSpec],
) -> Result<(BTreeMap<String, String>, Vec<SecretSpec>)> {
    let mut values = stored(root)?;
    if let Some(f) = secrets_file {
        values.extend(read_file(f)?);
    }
    values.extend(explicit(specs));
    let mut missing = Vec::new();
    for spec in specs {
        match values.get(&spec.name) {
            None => missing.push(spec.clone()),
            Some(v) => check_secret(spec, v)?,
        }
    }
    Ok((values, missing))
}

/// `BOOTSTRAP_SECRET_*` variables, taken out of the environment at start so that no child
/// process (apt, psql, a validator) inherits them.
static FROM_ENV: std::sync::OnceLock<BTreeMap<String, String>> = std::sync::OnceLock::new();

/// Move the secret variables out of the environment. Called first thing, single-threaded.
pub fn take_from_environment() {
    let mut taken = BTreeMap::new();
    for (k, v) in std::env::vars_os() {
        let Some(name) = k.to_str().and_then(|k| k.strip_prefix("BOOTSTRAP_SECRET_")) else { continue };
        // Removed whatever its encoding; only a UTF-8 value can be used as a secret.
        if let Some(v) = v.to_str() {
            taken.insert(name.to_lowercase(), v.to_string());
        }
        std::env::remove_var(&k);
    }
    let _ = FROM_ENV.set(taken);
}

/// Secrets given for this run only: credentials and environment.
pub fn explicit(specs: &[SecretSpec]) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    let creds = std::env::var_os("CREDENTIALS_DIRECTORY");
    for spec in specs {
        if let Some(dir) = &creds {
            if let Ok(v) = std::fs::read_to_string(Path::new(dir).join(&spec.name)) {
                values.insert(spec.name.clone(), v.trim_end_matches('\n').to_string());
            }
        }
        if let Some(v) = FROM_ENV.get().and_then(|m| m.get(&spec.name.to_lowercase())) {
            values.insert(spec.name.clone(), v.clone());
        }
    }
    values
}

/// The error for secrets no source had, without a terminal to ask.
pub fn missing_error(missing: &[SecretSpec]) -> anyhow::Error {
    anyhow!(
        "missing secrets: {}. Without a terminal, give each as {} (environment), in \
         $CREDENTIALS_DIRECTORY/<name>, or in --secrets-file. Nothing was changed.",
        missing.iter().map(|s| format!("`{}` ({})", s.name, s.prompt)).collect::<Vec<_>>().join(", "),
        missing.iter().map(|s| env_name(&s.name)).collect::<Vec<_>>().join(", ")
    )
}

pub fn stored(root: &Path) -> Result<BTreeMap<String, String>> {
    let path = Layout::new(root).secrets_file();
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    read_file(&path)
}

/// Write `values` as the node's secrets: 0600 in a 0700 directory, atomically.
pub fn store(root: &Path, values: &BTreeMap<String, String>) -> Result<()> {
    let path = Layout::new(root).secrets_file();
    let dir = path.parent().expect("has a parent");
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let text = toml::to_string(values).context("cannot encode secrets")?;
    let body = format!("# Secrets of this node, written by bootstrap. Root only.\n{text}");
    states::engine::atomic::write_plain(&path, body.as_bytes(), 0o600)
}

fn read_file(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        // A parse error quotes the offending line, which may hold a secret: give only the place.
        let at = e.span().map(|s| text[..s.start].lines().count().max(1));
        anyhow!("{}: not valid TOML (line {})", path.display(), at.unwrap_or(0))
    })?;
    table
        .into_iter()
        .map(|(k, v)| match v {
            toml::Value::String(s) => Ok((k, s)),
            _ => Err(anyhow!("{}: secret `{k}` must be a string", path.display())),
        })
        .collect()
}
