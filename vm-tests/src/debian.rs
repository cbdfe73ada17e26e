//! The Debian releases the lab boots: each has its own base image and offline repository, and
//! the few paths that differ between them (PostgreSQL's major version).

/// Debian's archive, the one place base images and repositories come from.
pub const MIRROR: &str = "http://deb.debian.org/debian";

/// A Debian release a lab's nodes run. Bookworm is the default; scenarios that must pass on
/// both say so with `Lab::on`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Debian {
    /// Debian 12.
    Bookworm,
    /// Debian 13.
    Trixie,
}

impl Debian {
    pub const ALL: [Debian; 2] = [Debian::Bookworm, Debian::Trixie];

    /// Its place in `ALL` (per-release caches are arrays).
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The suite name debootstrap and apt use.
    pub fn suite(self) -> &'static str {
        match self {
            Debian::Bookworm => "bookworm",
            Debian::Trixie => "trixie",
        }
    }

    /// `VERSION_ID` in the node's os-release.
    pub fn version(self) -> &'static str {
        match self {
            Debian::Bookworm => "12",
            Debian::Trixie => "13",
        }
    }

    /// The PostgreSQL major version the release ships (`/etc/postgresql/<major>/main`).
    pub fn postgresql(self) -> &'static str {
        match self {
            Debian::Bookworm => "15",
            Debian::Trixie => "17",
        }
    }

    /// The apt sources the offline repository is downloaded from (one-line format).
    pub(crate) fn sources(self) -> String {
        let s = self.suite();
        format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {m} {s} {s}-updates main\n\
             deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {m}-security {s}-security main\n",
            m = MIRROR
        )
    }
}
