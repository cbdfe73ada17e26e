//! Site settings: roles declare each setting (type, default, prompt, required); the site file
//! gives values. Every value is checked against its type before anything changes, and an
//! unknown name is an error (a typo must not silently fall back to a default).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    String,
    Domain,
    Cidr,
    Ip,
    Url,
    Email,
    Port,
    Integer,
    Bool,
    /// A database or user name: lowercase letters, digits and `_`, not a pg_hba.conf keyword.
    Name,
    /// A whole file's text (a compose file): lines, but no other control characters.
    Text,
}

/// A setting as a role declares it: `[settings.domain] type = "domain" required = true`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SettingSpec {
    #[serde(rename = "type", default)]
    pub kind: Kind,
    /// A list of values of `kind`.
    #[serde(default)]
    pub list: bool,
    pub default: Option<toml::Value>,
    /// What to ask on a terminal; also the setting's description.
    pub prompt: Option<String>,
    /// Must have a value (from the site, a default or the operator) before anything runs.
    #[serde(default)]
    pub required: bool,
}

pub type Schema = BTreeMap<String, SettingSpec>;

impl SettingSpec {
    /// Check `value` against the declared type; the message names the setting.
    pub fn check(&self, name: &str, value: &toml::Value) -> Result<()> {
        match (self.list, value) {
            (true, toml::Value::Array(items)) => {
                for (i, v) in items.iter().enumerate() {
                    check_one(self.kind, v).map_err(|e| anyhow!("setting `{name}`[{i}]: {e}"))?;
                }
                Ok(())
            }
            (true, _) => bail!("setting `{name}` must be a list"),
            (false, v) => check_one(self.kind, v).map_err(|e| anyhow!("setting `{name}`: {e}")),
        }
    }

    /// A value typed by the operator at a prompt (lists: comma-separated).
    pub fn parse_answer(&self, name: &str, text: &str) -> Result<toml::Value> {
        let one = |t: &str| -> toml::Value {
            let t = t.trim();
            match self.kind {
                Kind::Port | Kind::Integer => {
                    t.parse::<i64>().map_or(toml::Value::String(t.into()), toml::Value::Integer)
                }
                Kind::Bool => match t {
                    "yes" | "y" | "true" => toml::Value::Boolean(true),
                    "no" | "n" | "false" => toml::Value::Boolean(false),
                    _ => toml::Value::String(t.into()),
                },
                _ => toml::Value::String(t.into()),
            }
        };
        let v = if self.list {
            toml::Value::Array(text.split(',').filter(|s| !s.trim().is_empty()).map(one).collect())
        } else {
            one(text)
        };
        self.check(name, &v)?;
        Ok(v)
    }
}

/// Unicode characters that change how the text around them reads, or hide: bidirectional
/// marks, embeddings, overrides and isolates, the zero-width space and word joiner, invisible
/// operators, line and paragraph separators, the byte order mark, tag characters. Not the
/// zero-width (non-)joiners: Persian, Indic scripts and emoji need them.
pub fn invisible(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{180E}' | '\u{200B}' | '\u{200E}' | '\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{E0000}'..='\u{E007F}')
}

/// No control characters: a newline in a setting would add lines to a config file (and a URL
/// parser drops it silently). Nor invisible format characters: a bidirectional override or a
/// zero-width space makes a value read differently from what it is (in a review, a diff, a
/// terminal). Every textual kind, before its own parse; `text` keeps its lines and tabs.
fn plain(kind: Kind, t: &str) -> Result<()> {
    if kind == Kind::Text {
        if t.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            bail!("must not contain control characters other than newlines and tabs");
        }
    } else if t.chars().any(char::is_control) {
        bail!("must not contain control characters (newlines, tabs)");
    }
    if let Some(c) = t.chars().find(|c| invisible(*c)) {
        bail!(
            "must not contain invisible format characters (U+{:04X}: bidirectional controls, zero-width characters)",
            u32::from(c)
        );
    }
    Ok(())
}

fn check_one(kind: Kind, v: &toml::Value) -> Result<()> {
    let s = || v.as_str().ok_or_else(|| anyhow!("must be a string, not {}", v.type_str()));
    if let Some(t) = v.as_str() {
        plain(kind, t)?;
    }
    match kind {
        Kind::String | Kind::Text => s().map(drop),
        Kind::Name => {
            let t = s()?;
            let ok = !t.is_empty()
                && t.len() <= 63
                && t.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                && !t.starts_with("pg_");
            if !ok {
                bail!("`{t}` is not a name (lowercase letters, digits and _, at most 63, not pg_…)");
            }
            // Words pg_hba.conf reads as keywords, not names.
            if ["all", "sameuser", "samerole", "samegroup", "replication", "public"].contains(&t) {
                bail!("`{t}` is reserved (a pg_hba.conf keyword)");
            }
            Ok(())
        }
        Kind::Domain => domain(s()?),
        Kind::Cidr => s()?
            .parse::<ipnet::IpNet>()
            .map(drop)
            .map_err(|_| anyhow!("`{}` is not a CIDR such as 10.0.0.0/24", s().unwrap_or_default())),
        Kind::Ip => s()?
            .parse::<std::net::IpAddr>()
            .map(drop)
            .map_err(|_| anyhow!("`{}` is not an IP address", s().unwrap_or_default())),
        Kind::Url => {
            let u = url::Url::parse(s()?).map_err(|e| anyhow!("`{}` is not a URL: {e}", s().unwrap_or_default()))?;
            if !matches!(u.scheme(), "https" | "http") || u.host_str().is_none() {
                bail!("`{u}` must be an http(s) URL with a host");
            }
            Ok(())
        }
        Kind::Email => {
            let t = s()?;
            match t.split_once('@') {
                Some((local, host)) if !local.is_empty() && !local.contains(char::is_whitespace) => {
                    domain(host).map_err(|_| anyhow!("`{t}` is not an e-mail address"))
                }
                _ => bail!("`{t}` is not an e-mail address"),
            }
        }
        Kind::Port => match v.as_integer() {
            Some(p) if (1..=65535).contains(&p) => Ok(()),
            _ => bail!("must be a port number 1-65535, not {v}"),
        },
        Kind::Integer => v.as_integer().map(drop).ok_or_else(|| anyhow!("must be an integer, not {v}")),
        Kind::Bool => v.as_bool().map(drop).ok_or_else(|| anyhow!("must be true or false, not {v}")),
    }
}

/// A DNS name: labels of letters, digits and hyphens (underscore allowed for SRV-style labels),
/// 1-63 characters, not starting or ending with a hyphen, at most 253 in all.
pub fn domain(name: &str) -> Result<()> {
    let n = name.strip_suffix('.').unwrap_or(name);
    let ok = !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !ok {
        bail!("`{name}` is not a valid domain name");
    }
    Ok(())
}

/// The outcome of checking a site's settings against the loaded roles.
pub struct Resolved {
    /// Values for the loaded roles: the site's, else the defaults.
    pub values: toml::Table,
    /// Required settings that have neither.
    pub missing: Vec<String>,
}

/// Check `site` against `known` (every role's declarations, so a db node accepts a site file
/// that also configures app nodes) and resolve the values `loaded` (this node's roles) need.
pub fn resolve(loaded: &Schema, known: &Schema, site: &toml::Table, origin: &str) -> Result<Resolved> {
    let mut errors = Vec::new();
    for (name, v) in site {
        match known.get(name) {
            None => errors.push(format!(
                "{origin}: unknown setting `{name}` (known: {})",
                known.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            Some(spec) => {
                if let Err(e) = spec.check(name, v) {
                    errors.push(format!("{origin}: {e}"));
                }
            }
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    let mut values = toml::Table::new();
    let mut missing = Vec::new();
    for (name, spec) in loaded {
        match site.get(name).or(spec.default.as_ref()) {
            Some(v) => {
                values.insert(name.clone(), v.clone());
            }
            None if spec.required => missing.push(name.clone()),
            None => {}
        }
    }
    Ok(Resolved { values, missing })
}

/// Template data for settings: every declared setting is present, unset ones as null, so
/// `{{#if settings.x}}` works in strict mode.
pub fn template_data(loaded: &Schema, values: &toml::Table) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for name in loaded.keys() {
        map.insert(name.clone(), serde_json::Value::Null);
    }
    for (k, v) in values {
        map.insert(k.clone(), serde_json::to_value(v).unwrap_or_default());
    }
    serde_json::Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: Kind) -> SettingSpec {
        SettingSpec { kind, list: false, default: None, prompt: None, required: false }
    }

    fn s(v: &str) -> toml::Value {
        toml::Value::String(v.into())
    }

    #[test]
    fn types() {
        assert!(spec(Kind::Domain).check("d", &s("app.example.com")).is_ok());
        assert!(spec(Kind::Domain).check("d", &s("-bad.example")).is_err());
        assert!(spec(Kind::Domain).check("d", &s("a b")).is_err());
        assert!(spec(Kind::Cidr).check("c", &s("198.18.0.0/24")).is_ok());
        assert!(spec(Kind::Cidr).check("c", &s("fd00::/64")).is_ok());
        assert!(spec(Kind::Cidr).check("c", &s("198.18.0.0/33")).is_err());
        assert!(spec(Kind::Url).check("u", &s("https://acme.example/dir")).is_ok());
        assert!(spec(Kind::Url).check("u", &s("ftp://x")).is_err());
        assert!(spec(Kind::Email).check("e", &s("ops@example.com")).is_ok());
        assert!(spec(Kind::Email).check("e", &s("ops@")).is_err());
        assert!(spec(Kind::Port).check("p", &toml::Value::Integer(443)).is_ok());
        assert!(spec(Kind::Port).check("p", &toml::Value::Integer(70000)).is_err());
        let e = spec(Kind::Port).check("listen_port", &s("443")).unwrap_err().to_string();
        assert!(e.contains("`listen_port`"), "{e}");
        let list = SettingSpec { list: true, ..spec(Kind::Ip) };
        assert!(list.parse_answer("peers", "198.18.0.5, 198.18.0.6").is_ok());
        assert!(list.parse_answer("peers", "198.18.0.5, nope").is_err());
    }

    #[test]
    fn strings_and_names() {
        assert!(spec(Kind::String).check("s", &s("a\nbind :8080")).is_err());
        for sneaky in ["admin\u{202E}nimda", "zero\u{200B}width", "\u{FEFF}bom", "iso\u{2066}late"] {
            let e = spec(Kind::String).check("s", &s(sneaky)).unwrap_err().to_string();
            assert!(e.contains("invisible format characters (U+"), "{e}");
        }
        assert!(spec(Kind::String).check("s", &s("Café Ünïcode — fine")).is_ok());
        assert!(spec(Kind::String).check("s", &s("می\u{200C}خواهم 👩\u{200D}💻")).is_ok(), "ZWNJ/ZWJ are text");
        assert!(spec(Kind::String).check("s", &s("tag\u{E0041}")).is_err());
        assert!(spec(Kind::Text).check("s", &s("version: \"3\"\nservices:\n\tweb: {}\n")).is_ok());
        assert!(spec(Kind::Text).check("s", &s("a\rb")).is_err());
        assert!(spec(Kind::Text).check("s", &s("a\u{202E}b")).is_err());
        assert!(spec(Kind::Name).check("n", &s("app_db")).is_ok());
        assert!(spec(Kind::Name).check("n", &s("all")).unwrap_err().to_string().contains("reserved"));
        assert!(spec(Kind::Name).check("n", &s("App")).is_err());
    }

    #[test]
    fn every_textual_kind_refuses_control_and_invisible_characters() {
        let cases = [
            (Kind::Url, "https://x/\nevil", "control characters"),
            (Kind::Url, "https://x/\u{202E}live", "U+202E"),
            (Kind::Email, "ops\u{1b}[2J@example.com", "control characters"),
            (Kind::Domain, "app\u{200B}.example.com", "U+200B"),
            (Kind::Cidr, "10.0.0.0/8\t", "control characters"),
            (Kind::Name, "app\u{FEFF}", "U+FEFF"),
        ];
        for (kind, value, why) in cases {
            let e = spec(kind).check("upstream", &s(value)).unwrap_err().to_string();
            assert!(e.starts_with("setting `upstream`: ") && e.contains(why), "{kind:?} {value:?}: {e}");
        }
        let list = SettingSpec { list: true, ..spec(Kind::Url) };
        let e = list.check("mirrors", &toml::Value::Array(vec![s("https://ok/"), s("https://x/\revil")])).unwrap_err();
        assert!(e.to_string().starts_with("setting `mirrors`[1]: must not contain control"), "{e}");
    }

    #[test]
    fn resolve_reports_unknown_and_missing() {
        let mut known = Schema::new();
        known.insert("domain".into(), SettingSpec { required: true, ..spec(Kind::Domain) });
        known.insert("name".into(), SettingSpec { default: Some(s("fleet")), ..spec(Kind::String) });
        let mut site = toml::Table::new();
        site.insert("domian".into(), s("x.example"));
        let e = resolve(&known, &known, &site, "site.toml").err().unwrap().to_string();
        assert!(e.contains("unknown setting `domian`"), "{e}");
        let r = resolve(&known, &known, &toml::Table::new(), "site.toml").unwrap();
        assert_eq!(r.missing, ["domain"]);
        assert_eq!(r.values["name"], s("fleet"));
        let data = template_data(&known, &r.values);
        assert!(data["domain"].is_null());
    }
}
