//! Line numbers in a role file, for error messages.

use std::collections::HashMap;

/// Line numbers of a role file, found by binary search (roles may hold 10,000 states).
pub(crate) struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Lines { text, starts }
    }

    /// 1-based line of byte `offset`.
    pub(crate) fn line_at(&self, offset: usize) -> usize {
        self.starts.partition_point(|s| *s <= offset)
    }

    /// Lines of the keys of the table that starts at `start` (1-based), up to the next header.
    pub(crate) fn key_lines(&self, start: usize, t: &toml::Table) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        let from = self.starts.get(start.saturating_sub(1)).copied().unwrap_or(self.text.len());
        for (i, line) in self.text[from..].lines().enumerate() {
            let l = line.trim_start();
            if i > 0 && l.starts_with('[') {
                break;
            }
            if let Some((k, _)) = l.split_once('=') {
                let k = k.trim().trim_matches('"');
                if t.contains_key(k) || ["id", "type", "requires", "notify", "when"].contains(&k) {
                    out.entry(k.to_string()).or_insert(start + i);
                }
            }
        }
        out
    }
}

/// Words between backticks in an error message, in order.
pub(crate) fn quoted_words(msg: &str) -> impl Iterator<Item = &str> {
    msg.split('`').skip(1).step_by(2)
}
