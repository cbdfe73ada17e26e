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

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// `text` with every known secret value replaced by `<redacted>`: the last line of defence
    /// for error messages, logs and reports that might quote a value by accident.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in self.values.values() {
            if v.len() >= MIN_SCRUB_LEN && out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "<redacted>");
            }
        }
        out
    }
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
    fn scrub_and_debug_hide_values() {
        let mut s = Secrets::default();
        s.insert("db_password", "canary-7f3a".into());
        assert_eq!(s.scrub("pw canary-7f3a!"), "pw <redacted>!");
        assert!(!format!("{s:?}").contains("canary"));
    }
}
