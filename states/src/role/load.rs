//! Loading the node's roles: each role once, its includes first; settings, secrets,
//! discoveries and firewall rules merged across them.

use std::collections::{BTreeMap, HashMap};

use anyhow::{anyhow, bail, Result};

use crate::role::lines::Lines;
use crate::role::parse::{state_spec, Origin, RoleFile, SecretSpec, StateSpec};
use crate::role::settings::Schema;
use crate::role::source::RoleSource;

/// The loaded roles, includes resolved (each role once, includes first).
#[derive(Default)]
pub struct RoleSet {
    pub roles: Vec<String>,
    /// Settings declared by the roles.
    pub settings: Schema,
    pub secrets: Vec<SecretSpec>,
    pub states: Vec<StateSpec>,
    /// Discovery specs by peer-set name (parameters may use settings).
    pub discover: BTreeMap<String, toml::Table>,
    /// Firewall rules of all loaded roles, in role order (may use settings).
    pub firewall: Vec<String>,
}

/// Load `names` and what they include.
pub fn load(source: &dyn RoleSource, names: &[String]) -> Result<RoleSet> {
    let mut set = RoleSet::default();
    for n in names {
        load_one(source, n, &mut set, &mut Vec::new())?;
    }
    let mut seen: HashMap<&str, &Origin> = HashMap::new();
    for s in &set.states {
        if let Some(first) = seen.insert(&s.id, &s.origin) {
            bail!("{}: state id `{}` is already defined at {first}", s.origin, s.id);
        }
    }
    check_derived(&set.secrets)?;
    Ok(set)
}

/// A derived secret names a declared secret that is itself given, and a label no other
/// derived secret uses (two purposes must never share one value).
fn check_derived(secrets: &[SecretSpec]) -> Result<()> {
    let mut labels: HashMap<(&str, &str), &str> = HashMap::new();
    for s in secrets {
        let Some(d) = &s.derive else { continue };
        match secrets.iter().find(|o| o.name == d.from) {
            None => bail!("secret `{}` is derived from `{}`, which no role declares", s.name, d.from),
            Some(o) if o.derive.is_some() => bail!("secret `{}` is derived from `{}`, itself derived", s.name, d.from),
            Some(_) => {}
        }
        if s.generate {
            bail!("secret `{}` is derived: it can't also be `generate`d", s.name);
        }
        if let Some(other) = labels.insert((&d.from, &d.label), &s.name) {
            bail!("secrets `{other}` and `{}` are derived with the same label `{}`", s.name, d.label);
        }
    }
    Ok(())
}

/// The least `min_length` a role may declare.
const MIN_SECRET_LENGTH: usize = 8;

/// A secret's name is a file name under `$CREDENTIALS_DIRECTORY`, a key of the secrets file
/// and part of `BOOTSTRAP_SECRET_<NAME>`: `../../x` would read outside the directory.
fn check_secret_name(label: &str, name: &str) -> Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        bail!("{label}: secret name {name:?} must be lowercase letters, digits and `_`, starting with a letter, at most 64");
    }
    Ok(())
}

/// A role's name becomes a file name in the roles directory: `../x` would read outside it, and
/// a hidden or invisible one would hide what runs. Anything else an operator named a role
/// before (`Web`, `app.v2`) stays valid.
fn check_role_name(name: &str, included_by: Option<&String>) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with(['.', '-'])
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control() || c.is_whitespace() || super::settings::invisible(c));
    if !ok {
        let by = included_by.map_or(String::new(), |r| format!(" (included by `{r}`)"));
        bail!("role name {name:?}{by} must be a plain file name: no `/`, `\\`, spaces or control characters, not starting with `.` or `-`");
    }
    Ok(())
}

fn load_one(source: &dyn RoleSource, name: &str, set: &mut RoleSet, path: &mut Vec<String>) -> Result<()> {
    if set.roles.iter().any(|r| r == name) {
        return Ok(());
    }
    if path.iter().any(|r| r == name) {
        bail!("roles include each other: {} -> {name}", path.join(" -> "));
    }
    check_role_name(name, path.last())?;
    let file = format!("{name}.toml");
    let Some((text, label)) = source.read_labeled(&file)? else {
        bail!("unknown role `{name}` (available: {})", source.role_names().join(", "));
    };
    let rf: RoleFile = toml::from_str(&text).map_err(|e| anyhow!("{label}: {e}"))?;
    path.push(name.to_string());
    for inc in &rf.includes {
        load_one(source, inc, set, path)?;
    }
    path.pop();

    for (name, spec) in rf.settings {
        match set.settings.get(&name) {
            Some(have) if have.kind != spec.kind || have.list != spec.list => {
                bail!("{label}: setting `{name}` is declared again with another type")
            }
            _ => {
                set.settings.insert(name, spec);
            }
        }
    }
    for s in rf.secret {
        check_secret_name(&label, &s.name)?;
        if s.min_length < MIN_SECRET_LENGTH {
            bail!(
                "{label}: secret `{}`: `min_length = {}` is too short to keep out of output (a short value can't be told from ordinary text); at least {MIN_SECRET_LENGTH}",
                s.name,
                s.min_length
            );
        }
        match set.secrets.iter_mut().find(|have| have.name == s.name) {
            // Declared by two roles (`app db` on one node): needed if either needs it,
            // generated if either allows, the stricter length.
            Some(have) => {
                if have.when.is_none() || s.when.is_none() {
                    have.when = None;
                }
                have.generate |= s.generate;
                have.optional &= s.optional;
                have.min_length = have.min_length.max(s.min_length);
                have.max_length = match (have.max_length, s.max_length) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            None => set.secrets.push(s),
        }
    }
    let lines = Lines::new(&text);
    set.firewall.extend(rf.firewall);
    for (name, spec) in rf.discover {
        if set.discover.insert(name.clone(), spec).is_some() {
            bail!("{label}: `[discover.{name}]` is already declared by another role");
        }
    }
    for spanned in rf.state {
        let line = lines.line_at(spanned.span().start);
        set.states.push(state_spec(&lines, &label, line, spanned.into_inner())?);
    }
    set.roles.push(name.to_string());
    Ok(())
}

/// Every setting any role of `source` declares: what a site file may name.
/// `loaded` already holds the node's own roles, so only the others are read.
pub fn known_settings(source: &dyn RoleSource, loaded: &RoleSet) -> Result<Schema> {
    let mut all = loaded.settings.clone();
    for name in source.role_names().into_iter().filter(|n| !loaded.roles.contains(n)) {
        let file = format!("{name}.toml");
        let text = source.read(&file)?.unwrap_or_default();
        let rf: RoleFile = toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", source.label(&file)))?;
        for (k, v) in rf.settings {
            all.entry(k).or_insert(v);
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::source::DirSource;

    #[test]
    fn an_unreadable_role_file_is_an_error_not_an_unknown_role_nor_the_embedded_one() {
        use crate::role::source::{EmbeddedSource, Layered};
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.toml"), b"id = \"\xff\xfe\"\n").unwrap();
        static EMBEDDED: &[(&str, &str)] = &[("app.toml", "")];
        let source = Layered(vec![Box::new(DirSource(dir.path().to_path_buf())), Box::new(EmbeddedSource(EMBEDDED))]);
        let e = load(&source, &["app".to_string()]).err().expect("fell through to the embedded role").to_string();
        assert!(e.contains("cannot read") && e.contains("app.toml") && !e.contains("unknown role"), "{e}");
    }

    #[test]
    fn a_role_name_that_could_leave_the_roles_directory_is_refused() {
        let outer = tempfile::tempdir().unwrap();
        let roles = outer.path().join("roles");
        std::fs::create_dir(&roles).unwrap();
        // A role file beside the roles directory, which no name may reach.
        std::fs::write(outer.path().join("x.toml"), "[settings.outside]\n").unwrap();
        let source = DirSource(roles.clone());
        for bad in ["../x", "a/b", "/etc/x", "", ".x", "-x", "x\u{202e}", "a\\b", "a b", "x\u{1b}"] {
            let e = load(&source, &[bad.to_string()]).err().unwrap_or_else(|| panic!("{bad:?} accepted")).to_string();
            assert!(e.contains(&format!("role name {bad:?} must be")), "{e}");
        }
        // Names operators gave their roles before stay valid.
        for good in ["App", "app.v2"] {
            std::fs::write(roles.join(format!("{good}.toml")), "").unwrap();
            assert_eq!(load(&source, &[good.to_string()]).unwrap().roles, [good]);
        }
        std::fs::write(roles.join("app.toml"), "includes = [\"../x\"]\n").unwrap();
        let e = load(&source, &["app".to_string()]).err().expect("an include out of the directory").to_string();
        assert!(e.contains("role name \"../x\" (included by `app`) must be"), "{e}");
        std::fs::write(roles.join("app.toml"), "includes = [\"web-2\"]\n").unwrap();
        std::fs::write(roles.join("web-2.toml"), "").unwrap();
        assert_eq!(load(&source, &["app".to_string()]).unwrap().roles, ["web-2", "app"]);
    }

    #[test]
    fn a_secret_name_that_could_leave_its_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let role = |name: &str| format!("[[secret]]\nname = \"{name}\"\nprompt = \"p\"\n");
        let source = DirSource(dir.path().to_path_buf());
        for bad in ["../../x", "a/b", "A", "", "1x", ".x", "x-y", "x\\u202e"] {
            std::fs::write(dir.path().join("r.toml"), role(bad)).unwrap();
            let e = load(&source, &["r".to_string()]).err().unwrap_or_else(|| panic!("{bad:?} accepted")).to_string();
            assert!(e.contains("r.toml") && e.contains("secret name"), "{e}");
        }
        std::fs::write(dir.path().join("r.toml"), role("db_password2")).unwrap();
        assert_eq!(load(&source, &["r".to_string()]).unwrap().secrets[0].name, "db_password2");
        std::fs::write(dir.path().join("r.toml"), role("pin") + "min_length = 4\n").unwrap();
        let e = load(&source, &["r".to_string()]).err().expect("a short min_length accepted").to_string();
        assert!(e.contains("`min_length = 4` is too short"), "{e}");
    }
}
