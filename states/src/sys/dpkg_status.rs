//! The dpkg database as the `packages` state needs it: which packages are installed. Read
//! straight from `/var/lib/dpkg/status` (no `dpkg-query` per package), looking only at the
//! `Package` and `Status` fields, since a full system's file is 1–2 MB and is read every run.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::path::Path;

use anyhow::{Context as _, Result};

#[derive(Debug, Default)]
pub struct DpkgStatus {
    installed: HashSet<String>,
}

impl DpkgStatus {
    /// Parse the status file at `path`; a missing file is an empty database (a bare tree).
    pub fn read(path: &Path) -> Result<DpkgStatus> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(DpkgStatus::parse(&bytes)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(DpkgStatus::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn parse(text: &[u8]) -> DpkgStatus {
        let mut installed = HashSet::new();
        let mut package: Option<&[u8]> = None;
        for line in text.split(|&b| b == b'\n') {
            // Most lines are other fields or continuation lines: reject them on the first byte.
            match line.first() {
                None => package = None, // blank line: end of a stanza
                Some(b'P') => {
                    if let Some(name) = line.strip_prefix(b"Package:") {
                        package = Some(name.trim_ascii());
                    }
                }
                Some(b'S') => {
                    if let (Some(status), Some(name)) = (line.strip_prefix(b"Status:"), package) {
                        if is_installed(status) {
                            installed.insert(String::from_utf8_lossy(name).into_owned());
                        }
                    }
                }
                _ => {}
            }
        }
        DpkgStatus { installed }
    }

    pub fn is_installed(&self, name: &str) -> bool {
        self.installed.contains(name)
    }

    pub fn len(&self) -> usize {
        self.installed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.installed.is_empty()
    }
}

/// `Status: WANT FLAG STATE`: the package's files are in place and configured when STATE is
/// `installed` and FLAG is `ok`, whatever is wanted (`hold ok installed` counts; a package only
/// `unpacked`, `half-configured` or left as `config-files` does not).
fn is_installed(status: &[u8]) -> bool {
    let mut words = status.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty());
    let _want = words.next();
    words.next() == Some(b"ok") && words.next() == Some(b"installed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_configured_packages() {
        let db = DpkgStatus::parse(
            b"Package: cron\nStatus: install ok installed\nDescription: x\n Status: fake continuation\n\n\
              Package: exim4\nStatus: deinstall ok config-files\n\n\
              Package: held\nStatus: hold ok installed\n\n\
              Package: broken\nStatus: install reinstreq half-installed\n\n\
              Package: half\nStatus: install ok half-configured\n",
        );
        assert!(db.is_installed("cron") && db.is_installed("held"));
        assert!(!db.is_installed("exim4") && !db.is_installed("broken") && !db.is_installed("half"));
        assert_eq!(db.len(), 2);
    }
}
