//! Secret values held for a run, and the scrubber that keeps them out of every output.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};

/// Secret values by name. `Debug` never prints them.
#[derive(Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, String>,
    /// Secrets a dry run was not given: asking for one is recorded, so the compiler can show
    /// the state that needs it as pending instead of failing the whole dry run.
    missing: BTreeSet<String>,
    asked: Arc<Mutex<BTreeSet<String>>>,
    /// Values no longer in use (rotated out by `secret set`): never used, still scrubbed.
    retired: Vec<String>,
}

/// Values shorter than this are not scrubbed from free text: they would mangle ordinary words.
/// Secret rules require longer values anyway.
const MIN_SCRUB_LEN: usize = 4;

impl Secrets {
    pub fn new(values: BTreeMap<String, String>) -> Self {
        Secrets { values, ..Default::default() }
    }

    /// These secrets are known to be missing (a dry run without them).
    pub fn with_missing(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.missing.extend(names);
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        if self.missing.contains(name) {
            self.asked.lock().unwrap().insert(name.to_string());
        }
        self.values.get(name).map(String::as_str)
    }

    /// Whether this is a dry run without some secret.
    pub fn has_missing(&self) -> bool {
        !self.missing.is_empty()
    }

    /// The missing secrets asked for since the last call (shared by every clone).
    pub fn take_asked_missing(&self) -> Vec<String> {
        std::mem::take(&mut *self.asked.lock().unwrap()).into_iter().collect()
    }

    pub fn insert(&mut self, name: &str, value: String) {
        self.values.insert(name.to_string(), value);
    }

    /// A value rotated out: a tool may still print it (an error about the old password).
    pub fn retire(&mut self, value: String) {
        self.retired.push(value);
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// `text` with every known secret value replaced by `<redacted>`: the last line of defence
    /// for error messages, logs and reports that might quote a value by accident.
    /// Also the forms a tool may print a value in: base64 (standard and URL-safe, also inside
    /// a longer encoding such as HTTP basic auth's `user:password`), hex, URL and JSON escapes,
    /// and a prefix of 12 characters or more (a truncated echo).
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in self.values.values().chain(&self.retired).filter(|v| v.len() >= MIN_SCRUB_LEN) {
            for form in encoded_forms(v) {
                if out.contains(&form) {
                    out = out.replace(&form, "<redacted>");
                }
            }
            out = scrub_prefixes(&out, v);
        }
        out
    }
}

/// A prefix this long is most of the value; shorter ones would blank ordinary words in every
/// message (a secret starting `postgres` or `https://`).
const MIN_PREFIX: usize = 12;

/// Prefixes of `v` (longest first) of at least `MIN_PREFIX` characters.
fn scrub_prefixes(text: &str, v: &str) -> String {
    let ends: Vec<usize> = v.char_indices().map(|(i, _)| i).skip(MIN_PREFIX).collect();
    let Some(&first) = ends.first() else { return text.to_string() };
    if !text.contains(&v[..first]) {
        return text.to_string();
    }
    let mut out = text.to_string();
    for &end in ends.iter().rev() {
        out = out.replace(&v[..end], "<redacted>");
    }
    out
}

/// `v` as it may appear encoded, longest-lived forms first; each differs from `v` or is left out.
fn encoded_forms(v: &str) -> Vec<String> {
    use data_encoding::{BASE64, BASE64URL, BASE64URL_NOPAD, BASE64_NOPAD, HEXLOWER, HEXUPPER};
    let b = v.as_bytes();
    let mut forms = vec![v.to_string(), BASE64.encode(b), BASE64URL.encode(b), HEXLOWER.encode(b), HEXUPPER.encode(b)];
    // Inside a longer base64 text the value may start at any of three byte offsets: the
    // characters that depend on its bytes only.
    for enc in [&BASE64_NOPAD, &BASE64URL_NOPAD] {
        for k in 0..3 {
            let mut padded = vec![0u8; k];
            padded.extend_from_slice(b);
            let e = enc.encode(&padded);
            let (start, end) = ((8 * k).div_ceil(6), (8 * (k + b.len())) / 6);
            if end > start + MIN_PREFIX {
                forms.push(e[start..end].to_string());
            }
        }
    }
    // URL escapes, with upper- and (as some encoders write them) lowercase hex digits.
    let escaped = |lower: bool| -> String {
        b.iter()
            .map(|&c| match c {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (c as char).to_string(),
                _ if lower => format!("%{c:02x}"),
                _ => format!("%{c:02X}"),
            })
            .collect()
    };
    forms.push(escaped(false));
    forms.push(escaped(true));
    if let Ok(json) = serde_json::to_string(v) {
        forms.push(json[1..json.len() - 1].to_string());
    }
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    forms.retain(|f| f.len() >= MIN_SCRUB_LEN);
    forms
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_hides_encoded_truncated_and_retired_values() {
        use data_encoding::{BASE64, HEXLOWER};
        let pw = "canary-S3cret/+?&=v4lue";
        let mut s = Secrets::default();
        s.insert("db_password", pw.into());
        s.retire("canary-old-Pw-0001".into());
        let b64 = BASE64.encode(pw.as_bytes());
        let basic = BASE64.encode(format!("app:{pw}").as_bytes());
        let url = "canary-S3cret%2F%2B%3F%26%3Dv4lue".to_string();
        let json = serde_json::to_string(&format!("{pw}\"q")).unwrap();
        // (text a tool printed, what of the secret it holds)
        let cases = [
            (format!("b64 {b64}"), b64.clone()),
            (format!("hex {}", HEXLOWER.encode(pw.as_bytes())), HEXLOWER.encode(pw.as_bytes())),
            (format!("url postgres://app:{url}@db/x"), url.clone()),
            (format!("json {json}"), json[1..json.len() - 3].to_string()),
            (format!("cut {}…", &pw[..13]), pw[..13].to_string()),
            // (the part after the prefix: only the whole lowercase-escape form can take it)
            ("lower url canary-S3cret%2f%2b%3f%26%3dv4lue".to_string(), "%2f%2b%3f%26%3dv4lue".to_string()),
            // `app:` is 4 bytes: the password starts at offset 1 of a base64 group.
            (format!("Authorization: Basic {basic}"), basic[6..basic.len() - 2].to_string()),
            ("old canary-old-Pw-0001 rejected".to_string(), "canary-old-Pw-0001".to_string()),
        ];
        for (text, held) in &cases {
            assert!(text.contains(held.as_str()), "the case itself: {text} / {held}");
            let out = s.scrub(text);
            assert!(!out.contains(held.as_str()) && out.contains("<redacted>"), "{text} -> {out}");
        }
        assert_eq!(s.scrub("an ordinary line"), "an ordinary line");
        // A short common prefix stays: `canary-S3c` is not blanked.
        assert_eq!(s.scrub("canary-S3c"), "canary-S3c");
    }

    #[test]
    fn scrub_and_debug_hide_values() {
        let mut s = Secrets::default();
        s.insert("db_password", "canary-7f3a".into());
        assert_eq!(s.scrub("pw canary-7f3a!"), "pw <redacted>!");
        assert!(!format!("{s:?}").contains("canary"));
    }
}
