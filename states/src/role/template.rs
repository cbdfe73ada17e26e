//! Handlebars rendering in strict mode, HTML escaping off, with a `secret` helper that marks
//! whatever it touches as secret.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Result};
use handlebars::{
    Context as HbContext, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason, Renderable,
    ScopedJson, StringOutput, Template,
};

use crate::engine::content::Content;
use crate::engine::secrets::Secrets;

/// Template data, wrapped once for every render that uses it (Handlebars copies what it is
/// asked to wrap, and a run renders dozens of parameters with the same data).
pub struct Data(HbContext);

impl Data {
    pub fn new(value: serde_json::Value) -> Data {
        Data(HbContext::from(value))
    }

    pub fn value(&self) -> &serde_json::Value {
        self.0.data()
    }
}

pub struct Templates {
    hb: Handlebars<'static>,
    used_secret: Arc<AtomicBool>,
    /// Parameters parsed so far, by text: a role repeats the same few (`{{facts.postgresql}}`,
    /// a `when`), and parsing, not rendering, is what costs.
    inline: RefCell<HashMap<String, Template>>,
}

/// `{{secret "name"}}`: the value of a secret; the rendered file becomes secret.
struct SecretHelper {
    secrets: Secrets,
    used: Arc<AtomicBool>,
}

impl HelperDef for SecretHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc HbContext,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let name = h
            .param(0)
            .and_then(|p| p.value().as_str())
            .ok_or_else(|| RenderErrorReason::ParamNotFoundForName("secret", "name".into()))?;
        let value =
            self.secrets.get(name).ok_or_else(|| RenderErrorReason::Other(format!("secret `{name}` is not set")))?;
        self.used.store(true, Ordering::Relaxed);
        Ok(ScopedJson::Derived(serde_json::Value::String(value.to_string())))
    }
}

handlebars::handlebars_helper!(hostport: |host: str, port: u64| {
    // IPv6 addresses in brackets, so the port can't be mistaken for a part of them.
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
});

handlebars::handlebars_helper!(sshhost: |host: str| {
    // An IPv6 address in brackets, as ssh and sshfs take it before `:path`.
    if host.contains(':') { format!("[{host}]") } else { host.to_string() }
});

// Any value as JSON (a string quoted and escaped, a list as an array): for JSON files.
handlebars::handlebars_helper!(json: |v: Json| v.to_string());

// `KEY=VALUE` (a setting's item) as an env-file line with the value quoted (`envquote`); an
// item that is not one is an error naming it.
fn envline(
    h: &handlebars::Helper,
    _: &handlebars::Handlebars,
    _: &handlebars::Context,
    _: &mut handlebars::RenderContext,
    out: &mut dyn handlebars::Output,
) -> handlebars::HelperResult {
    let item = h.param(0).and_then(|p| p.value().as_str()).unwrap_or("");
    let ok = item.split_once('=').filter(|(k, _)| {
        !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    let Some((k, v)) = ok else {
        return Err(handlebars::RenderErrorReason::Other(format!(
            "`{item}` is not KEY=VALUE (KEY: letters, digits, _)"
        ))
        .into());
    };
    out.write(&format!("{k}={}", sh_quote(v)))?;
    Ok(())
}

/// Double-quoted as both sh and systemd's EnvironmentFile read it.
fn sh_quote(v: &str) -> String {
    let mut q = String::from("\"");
    for c in v.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

handlebars::handlebars_helper!(envquote: |v: str| sh_quote(v));

handlebars::handlebars_helper!(servername: |v: str| {
    // A name haproxy takes for a server (letters, digits, `-_.:`), derived from what it names,
    // so it stays the same while that server is in the list.
    v.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.:".contains(c) { c } else { '_' }).collect::<String>()
});

handlebars::handlebars_helper!(html: |v: str| {
    // Escaping is off (configuration files): an HTML page escapes what it shows.
    handlebars::html_escape(v)
});

/// The first OpenSSH public key among `v` (a string or a list, as a discovered peer's `txt`),
/// as `TYPE BASE64` without its comment; empty when there is none. What a peer publishes
/// goes into `authorized_keys` and `known_hosts`: anything else in it (options, a newline)
/// must not.
fn ssh_public_key(v: &serde_json::Value) -> String {
    const TYPES: &[&str] =
        &["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa"];
    let candidates: Vec<&str> = match v {
        serde_json::Value::String(s) => vec![s.as_str()],
        serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_str()).collect(),
        _ => Vec::new(),
    };
    candidates
        .into_iter()
        .find_map(|c| {
            let mut words = c.split(' ');
            let (kind, key) = (words.next()?, words.next()?);
            let base64 = |k: &str| k.len() >= 16 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
            (TYPES.contains(&kind) && base64(key) && !c.chars().any(char::is_control)).then(|| format!("{kind} {key}"))
        })
        .unwrap_or_default()
}

handlebars::handlebars_helper!(sshkey: |v: Json| ssh_public_key(v));

handlebars::handlebars_helper!(others: |peers: array, address: str| {
    // The peers but this node (found by its own address): keepalived's unicast peers.
    serde_json::Value::Array(peers.iter().filter(|p| p["address"].as_str() != Some(address)).cloned().collect())
});

impl Templates {
    pub fn new(secrets: &Secrets) -> Self {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        hb.register_helper("hostport", Box::new(hostport));
        hb.register_helper("envquote", Box::new(envquote));
        hb.register_helper("json", Box::new(json));
        hb.register_helper("envline", Box::new(envline));
        hb.register_helper("servername", Box::new(servername));
        hb.register_helper("others", Box::new(others));
        hb.register_helper("html", Box::new(html));
        hb.register_helper("sshkey", Box::new(sshkey));
        hb.register_helper("sshhost", Box::new(sshhost));
        let used_secret = Arc::new(AtomicBool::new(false));
        hb.register_helper("secret", Box::new(SecretHelper { secrets: secrets.clone(), used: used_secret.clone() }));
        Templates { hb, used_secret, inline: RefCell::default() }
    }

    pub fn has(&self, name: &str) -> bool {
        self.hb.has_template(name)
    }

    /// The named templates loaded so far (each was rendered by a state), sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.hb.get_templates().keys().cloned().collect();
        v.sort();
        v
    }

    /// Register `text` as template `name`; a syntax error names the template and line.
    pub fn add(&mut self, name: &str, text: &str) -> Result<()> {
        self.hb.register_template_string(name, text).map_err(|e| anyhow!("{e}"))
    }

    /// Render an inline template (a role parameter). Secrets are refused: parameters appear
    /// in plans and logs.
    pub fn render_inline(&self, text: &str, data: &Data) -> Result<String> {
        self.used_secret.store(false, Ordering::Relaxed);
        let out = self.render_cached(text, data).map_err(|e| anyhow!("{e}"))?;
        if self.used_secret.load(Ordering::Relaxed) {
            anyhow::bail!("a parameter can't use a secret (it would show in plans); use a template file");
        }
        Ok(out)
    }

    fn render_cached(&self, text: &str, data: &Data) -> Result<String, RenderError> {
        let mut inline = self.inline.borrow_mut();
        if !inline.contains_key(text) {
            inline.insert(text.to_string(), Template::compile(text)?);
        }
        let mut out = StringOutput::new();
        inline[text].render(&self.hb, &data.0, &mut RenderContext::new(None), &mut out)?;
        out.into_string().map_err(RenderError::from)
    }

    /// Render `name` with `data`; the content is secret when the `secret` helper was used.
    pub fn render(&self, name: &str, data: &Data) -> Result<Content> {
        self.used_secret.store(false, Ordering::Relaxed);
        let text = self.hb.render_with_context(name, &data.0).map_err(|e| anyhow!("{e}"))?;
        Ok(Content { bytes: text.into_bytes(), secret: self.used_secret.load(Ordering::Relaxed) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn templates() -> Templates {
        let mut s = Secrets::default();
        s.insert("pw", "canary-secret".into());
        Templates::new(&s)
    }

    #[test]
    fn strict_and_unescaped() {
        let mut t = templates();
        t.add("a.hbs", "x={{settings.x}}\n").unwrap();
        let c = t.render("a.hbs", &Data::new(json!({"settings": {"x": "<&>"}}))).unwrap();
        assert_eq!(c, Content::public("x=<&>\n"));
        let err = t.render("a.hbs", &Data::new(json!({"settings": {}}))).unwrap_err().to_string();
        assert!(err.contains("a.hbs") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn hostport_brackets_ipv6() {
        let mut t = templates();
        t.add("s", "{{sshhost a}}:/x {{sshhost b}}:/x").unwrap();
        let c = t.render("s", &Data::new(json!({"a": "fd00::5", "b": "198.18.0.5"}))).unwrap();
        assert_eq!(String::from_utf8(c.bytes).unwrap(), "[fd00::5]:/x 198.18.0.5:/x");
        t.add("h", "{{hostport a 5432}} {{hostport b 80}}").unwrap();
        let c = t.render("h", &Data::new(json!({"a": "2001:db8::1", "b": "198.18.0.5"}))).unwrap();
        assert_eq!(String::from_utf8(c.bytes).unwrap(), "[2001:db8::1]:5432 198.18.0.5:80");
    }

    #[test]
    fn envquote_escapes_for_sh() {
        let mut t = templates();
        t.add("e", "P={{envquote (secret \"pw\")}} Q={{envquote q}}").unwrap();
        let c = t.render("e", &Data::new(json!({"q": "a\"b$c`d\\e f"}))).unwrap();
        assert!(c.secret, "a secret through a subexpression still marks the file");
        assert_eq!(String::from_utf8(c.bytes).unwrap(), "P=\"canary-secret\" Q=\"a\\\"b\\$c\\`d\\\\e f\"");
    }

    #[test]
    fn envline_quotes_the_value_and_refuses_what_is_not_key_value() {
        let mut t = templates();
        t.add("l", "{{#each items}}{{envline this}}\n{{/each}}").unwrap();
        let c = t.render("l", &Data::new(json!({"items": ["A=hello world", "B=it's $x", "C="]}))).unwrap();
        assert_eq!(String::from_utf8(c.bytes).unwrap(), "A=\"hello world\"\nB=\"it's \\$x\"\nC=\"\"\n");
        for bad in ["novalue", "=x", "1A=x", "A B=x"] {
            let e = t.render("l", &Data::new(json!({"items": [bad]}))).unwrap_err().to_string();
            assert!(e.contains("is not KEY=VALUE"), "{bad}: {e}");
        }
    }

    #[test]
    fn html_escapes_what_a_page_shows() {
        let mut t = templates();
        t.add("p", "<p>{{html name}}</p>").unwrap();
        let c = t.render("p", &Data::new(json!({"name": "<script>x</script> & \"Co\" 'n'"}))).unwrap();
        assert_eq!(
            String::from_utf8(c.bytes).unwrap(),
            "<p>&lt;script&gt;x&lt;/script&gt; &amp; &quot;Co&quot; &#x27;n&#x27;</p>"
        );
    }

    #[test]
    fn sshkey_takes_a_plain_key_and_nothing_else() {
        let mut t = templates();
        t.add("k", "[{{sshkey txt}}]").unwrap();
        let render = |txt: serde_json::Value| {
            String::from_utf8(t.render("k", &Data::new(json!({ "txt": txt }))).unwrap().bytes).unwrap()
        };
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        assert_eq!(render(json!([format!("{key} app1 shared storage")])), format!("[{key}]"));
        assert_eq!(render(json!(["garbage", key])), format!("[{key}]"), "the first key among the strings");
        // Options, a newline smuggling a second line, an unknown type: not a key.
        assert_eq!(render(json!([format!("command=\"sh\" {key}")])), "[]");
        assert_eq!(render(json!([format!("{key} x\nssh-ed25519 AAAAother")])), "[]");
        assert_eq!(render(json!(["ssh-dss AAAAB3NzaC1kc3MAAACBAP"])), "[]");
        assert_eq!(render(json!([])), "[]");
    }

    #[test]
    fn secret_helper_marks_content() {
        let mut t = templates();
        t.add("s.hbs", "pw={{secret \"pw\"}}\n").unwrap();
        let c = t.render("s.hbs", &Data::new(json!({}))).unwrap();
        assert!(c.secret);
        t.add("p.hbs", "plain\n").unwrap();
        assert!(!t.render("p.hbs", &Data::new(json!({}))).unwrap().secret);
        t.add("m.hbs", "{{secret \"missing\"}}").unwrap();
        assert!(t.render("m.hbs", &Data::new(json!({}))).unwrap_err().to_string().contains("`missing` is not set"));
    }

    #[test]
    fn syntax_error_names_template_and_line() {
        let mut t = templates();
        let err = t.add("bad.hbs", "ok\n{{#if x}}\nno end\n").unwrap_err().to_string();
        assert!(err.contains("bad.hbs"), "{err}");
    }
}
