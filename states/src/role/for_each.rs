//! `for_each`: one state per item of a list (a volume, a mount), so a role names a thing once
//! however many the site configures.
//!
//! ```toml
//! [[state]]
//! id = "share-volume"
//! type = "directory"
//! for_each = { setting = "shared_volumes" }   # or ["a", "b"], or a template
//! path = "/srv/share/{{item}}"
//! ```
//!
//! Each item becomes a state `ID.ITEM` with `item` in its template data; `requires = ["ID"]`
//! elsewhere waits for every item's state (for none when the list is empty). Items name files
//! and units, so they are plain names: letters, digits, `_`, `-` and `.`, not `.` or `..`.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};

use crate::role::params::resolve_params;
use crate::role::parse::StateSpec;
use crate::role::template::{Data, Templates};

/// A state to compile, with the item it was made for.
pub struct Instance {
    pub spec: StateSpec,
    pub item: Option<String>,
}

/// The states with every `for_each` unrolled, and the ids each looped id stands for.
pub struct Expanded {
    pub instances: Vec<Instance>,
    pub looped: HashMap<String, Vec<String>>,
    pub errors: Vec<String>,
}

pub fn expand(specs: Vec<StateSpec>, templates: &Templates, data: &Data) -> Expanded {
    let mut out = Expanded { instances: Vec::with_capacity(specs.len()), looped: HashMap::new(), errors: Vec::new() };
    for mut spec in specs {
        let Some(list) = spec.for_each.take() else {
            out.instances.push(Instance { spec, item: None });
            continue;
        };
        let items = match items(list, templates, data) {
            Ok(items) => items,
            Err(e) => {
                let line = spec.key_lines.get("for_each").copied().unwrap_or(spec.origin.line);
                out.errors.push(format!(
                    "{}, line {line}: state `{}` ({}): `for_each`: {e:#}",
                    spec.origin.file, spec.id, spec.kind
                ));
                continue;
            }
        };
        let ids = items.iter().map(|item| format!("{}.{item}", spec.id)).collect();
        for item in items {
            let mut one = spec.clone();
            one.id = format!("{}.{item}", spec.id);
            out.instances.push(Instance { spec: one, item: Some(item) });
        }
        out.looped.insert(spec.id, ids);
    }
    // An item's id must not be one a role names itself.
    let mut seen = std::collections::HashSet::new();
    for i in &out.instances {
        if !seen.insert(i.spec.id.as_str()) {
            out.errors.push(format!("{}: state id `{}` is defined twice (by `for_each`)", i.spec.origin, i.spec.id));
        }
    }
    out
}

/// The items of a `for_each`: a list of names (a setting's, a literal one, or a template that
/// renders names separated by spaces or commas).
fn items(list: toml::Value, templates: &Templates, data: &Data) -> Result<Vec<String>> {
    let mut t = toml::Table::new();
    t.insert("for_each".into(), list);
    let resolved = resolve_params(t, templates, data)?;
    let items: Vec<String> = match resolved.get("for_each") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| anyhow!("`{v}` is not a name")))
            .collect::<Result<_>>()?,
        Some(toml::Value::String(s)) => {
            s.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty()).map(str::to_string).collect()
        }
        Some(other) => bail!("must be a list of names, {{ setting = \"name\" }} or a template, not {other}"),
    };
    for (i, item) in items.iter().enumerate() {
        check(item)?;
        if items[..i].contains(item) {
            bail!("`{item}` is in the list twice");
        }
    }
    Ok(items)
}

fn check(item: &str) -> Result<()> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    if item.is_empty() || item.len() > 64 || !item.chars().all(plain) || item == "." || item == ".." {
        bail!("`{item}` is not a plain name (letters, digits, `_`, `-`, `.`; at most 64)");
    }
    if item.starts_with(['-', '.']) {
        bail!("`{item}` must start with a letter or digit");
    }
    Ok(())
}

/// The template data of one item: the run's data with `item` set.
pub fn with_item(data: &Data, item: &str) -> Data {
    let mut v = data.value().clone();
    v["item"] = serde_json::Value::String(item.to_string());
    Data::new(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::secrets::Secrets;
    use serde_json::json;

    fn run(list: toml::Value) -> Result<Vec<String>> {
        let t = Templates::new(&Secrets::default());
        items(list, &t, &Data::new(json!({"settings": {"vols": ["a", "b-2"], "none": null, "bad": ["../x"]}})))
    }

    fn setting(name: &str) -> toml::Value {
        toml::Value::Table(toml::toml! { setting = name })
    }

    #[test]
    fn items_from_a_setting_a_list_or_a_template() {
        assert_eq!(run(setting("vols")).unwrap(), ["a", "b-2"]);
        assert!(run(setting("none")).unwrap().is_empty(), "an unset setting is no item");
        assert_eq!(run(toml::Value::from(vec!["x", "y"])).unwrap(), ["x", "y"]);
        assert_eq!(run(toml::Value::from("{{#each settings.vols}}{{this}} {{/each}}")).unwrap(), ["a", "b-2"]);
    }

    #[test]
    fn items_must_be_plain_distinct_names() {
        let err = run(setting("bad")).unwrap_err().to_string();
        assert!(err.contains("`../x` is not a plain name"), "{err}");
        assert!(run(toml::Value::from(vec!["a", "a"])).unwrap_err().to_string().contains("twice"));
        assert!(run(toml::Value::from(vec![".hidden"])).is_err());
        assert!(run(toml::Value::from(vec!["a/b"])).is_err());
        assert!(run(toml::Value::Integer(3)).is_err());
    }
}
