//! Role parameters with settings and template data filled in, and `when` conditions.

use anyhow::{anyhow, bail, Result};

use crate::role::template::{Data, Templates};

/// Whether a `when` condition holds.
pub fn included(cond: toml::Value, t: &Templates, data: &Data) -> Result<bool> {
    if let toml::Value::Table(tab) = &cond {
        if let Some(name) = tab.get("setting").and_then(|n| n.as_str()) {
            let v = &data.value()["settings"][name];
            return Ok(!(v.is_null()
                || v == &serde_json::Value::Bool(false)
                || v.as_str() == Some("")
                || v.as_array().is_some_and(|a| a.is_empty())));
        }
    }
    let mut one = toml::Table::new();
    one.insert("when".into(), cond);
    let resolved = resolve_params(one, t, data)?;
    Ok(match resolved.get("when") {
        // Rendered empty (and so left out).
        None => false,
        Some(toml::Value::String(s)) => !matches!(s.trim(), "" | "false" | "0"),
        Some(toml::Value::Boolean(b)) => *b,
        Some(other) => bail!("must be a string template, a boolean or {{ setting = \"name\" }}, not {other}"),
    })
}

/// Parameters with settings filled in: a string containing `{{` is rendered as a template
/// (strict; no secrets), a table `{ setting = "name" }` becomes that setting's value with its
/// type (a list stays a list), and `{ data = "a.b" }` any template data (unset: an error). A
/// parameter that comes out empty (an unset setting) is left out, as if not given.
pub fn resolve_params(params: toml::Table, t: &Templates, data: &Data) -> Result<toml::Table> {
    fn resolve(v: toml::Value, t: &Templates, data: &Data) -> Result<toml::Value> {
        Ok(match v {
            toml::Value::String(s) if s.contains("{{") => toml::Value::String(t.render_inline(&s, data)?),
            toml::Value::Table(tab) if tab.len() == 1 && tab.get("setting").is_some_and(|n| n.is_str()) => {
                let name = tab["setting"].as_str().unwrap_or_default();
                let value = &data.value()["settings"][name];
                if value.is_null() {
                    // Unset: the parameter is left out (the caller drops this marker).
                    return Ok(toml::Value::String(String::new()));
                }
                toml::Value::try_from(value).map_err(|e| anyhow!("setting `{name}`: {e}"))?
            }
            toml::Value::Table(tab) if tab.len() == 1 && tab.get("data").is_some_and(|n| n.is_str()) => {
                let path = tab["data"].as_str().unwrap_or_default();
                let value = path.split('.').fold(data.value(), |v, k| &v[k]);
                if value.is_null() {
                    bail!("template data `{path}` is not set");
                }
                toml::Value::try_from(value).map_err(|e| anyhow!("`{path}`: {e}"))?
            }
            // A list item that renders empty is left out: `["{{settings.domain}}"]` is empty
            // when no domain is set, and `{{#if}}` makes an item conditional.
            toml::Value::Array(a) => toml::Value::Array(
                a.into_iter()
                    .map(|v| resolve(v, t, data))
                    .filter(|v| !matches!(v, Ok(toml::Value::String(s)) if s.trim().is_empty()))
                    .collect::<Result<_>>()?,
            ),
            toml::Value::Table(tab) => {
                toml::Value::Table(tab.into_iter().map(|(k, v)| Ok((k, resolve(v, t, data)?))).collect::<Result<_>>()?)
            }
            other => other,
        })
    }
    let mut out = toml::Table::new();
    for (k, v) in params {
        let templated = match &v {
            toml::Value::String(s) => s.contains("{{"),
            toml::Value::Table(t) => t.len() == 1 && t.contains_key("setting"),
            _ => false,
        };
        let v = resolve(v, t, data).map_err(|e| anyhow!("`{k}`: {e:#}"))?;
        // An optional parameter templated from an unset setting is left out, not "".
        if !(templated && v.as_str().is_some_and(|s| s.trim().is_empty())) {
            out.insert(k, v);
        }
    }
    Ok(out)
}
