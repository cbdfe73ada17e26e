//! Where secrets come from without a terminal: the node's stored secrets, `--secrets-file`,
//! systemd credentials (`$CREDENTIALS_DIRECTORY/<name>`) and `BOOTSTRAP_SECRET_<NAME>`.
//! A run with a required secret missing stops before anything changes and names it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use states::role::SecretSpec;
use states::secrets::Secrets;

pub const SECRETS_FILE: &str = "/etc/bootstrap/secrets.toml";

pub fn env_name(name: &str) -> String {
    format!("BOOTSTRAP_SECRET_{}", name.to_uppercase())
}

/// Every secret `specs` needs, later sources overriding earlier ones: stored, file,
/// credentials, environment.
pub fn collect(root: &Path, secrets_file: Option<&Path>, specs: &[SecretSpec]) -> Result<Secrets> {
    let mut values = BTreeMap::new();
    let stored = root.join(SECRETS_FILE.trim_start_matches('/'));
    if stored.exists() {
        values.extend(read_file(&stored)?);
    }
    if let Some(f) = secrets_file {
        values.extend(read_file(f)?);
    }
    let creds = std::env::var_os("CREDENTIALS_DIRECTORY");
    for spec in specs {
        if let Some(dir) = &creds {
            let p = Path::new(dir).join(&spec.name);
            if let Ok(v) = std::fs::read_to_string(&p) {
                values.insert(spec.name.clone(), v.trim_end_matches('\n').to_string());
            }
        }
        if let Ok(v) = std::env::var(env_name(&spec.name)) {
            values.insert(spec.name.clone(), v);
        }
    }
    let mut missing = Vec::new();
    for spec in specs {
        match values.get(&spec.name) {
            None => missing.push(format!("`{}` ({})", spec.name, spec.prompt)),
            Some(v) if v.is_empty() => bail!("secret `{}` is empty", spec.name),
            Some(v) if v.chars().count() < spec.min_length => {
                bail!("secret `{}` is shorter than {} characters", spec.name, spec.min_length)
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        bail!(
            "missing secrets: {}. Without a terminal, give each as {} (environment), in \
             $CREDENTIALS_DIRECTORY/<name>, or in --secrets-file. Nothing was changed.",
            missing.join(", "),
            specs.iter().map(|s| env_name(&s.name)).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(Secrets::new(values))
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
