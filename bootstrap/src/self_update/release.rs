//! A release as `scripts/release` publishes it under a base URL:
//! `BASE/VERSION/manifest.toml` and its `.minisig` (signed with the release key built into this
//! binary), `BASE/VERSION/bootstrap` (the static binary), and `BASE/latest/manifest.toml` (+ sig),
//! the newest release's manifest. Only the signed manifest is trusted; the binary must match its
//! size and sha256 exactly.

use std::cmp::Ordering;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use states::engine::content::sha256_hex;
use states::sys::http::{self, shown};
use states::sys::signature;

/// This binary's version (`BOOTSTRAP_VERSION` at build, else the crate's).
pub const VERSION: &str = env!("BOOTSTRAP_BUILD_VERSION");
/// The only target releases are built for.
pub const TARGET: &str = "x86_64-unknown-linux-musl";
/// The minisign public key releases are signed with (empty: this build trusts none).
const RELEASE_KEY: &str = env!("BOOTSTRAP_RELEASE_KEY");

const MANIFEST_TIMEOUT: Duration = Duration::from_secs(5);
const BINARY_TIMEOUT: Duration = Duration::from_secs(120);
const MANIFEST_CAP: u64 = 4096;
const SIGNATURE_CAP: u64 = 4096;
/// A release binary is at most this big (the build budget is 8 MB).
pub const BINARY_CAP: u64 = 64 * 1000 * 1000;

/// What a release's signed manifest says.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: String,
    pub target: String,
    pub sha256: String,
    pub size: u64,
}

fn release_key() -> Result<signature::PublicKey> {
    if RELEASE_KEY.is_empty() {
        bail!(
            "this build of bootstrap trusts no release key (built without BOOTSTRAP_RELEASE_KEY), so it cannot \
             update itself: install a release build (scripts/release)"
        );
    }
    signature::public_key(RELEASE_KEY)
}

/// `a` against `b` as semantic versions.
pub fn compare(a: &str, b: &str) -> Result<Ordering> {
    Ok(parse(a)?.cmp(&parse(b)?))
}

fn parse(v: &str) -> Result<semver::Version> {
    semver::Version::parse(v).map_err(|e| anyhow!("`{v}` is not a version like 1.2.3 ({e})"))
}

fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}

/// The verified manifest of release `version` (`None`: the latest) under `url`.
pub fn manifest(url: &str, version: Option<&str>) -> Result<Manifest> {
    let key = release_key()?;
    if let Some(v) = version {
        parse(v)?;
    }
    let at = format!("{}/{}/manifest.toml", base(url), version.unwrap_or("latest"));
    let bytes = http::get_body(&at, MANIFEST_TIMEOUT, MANIFEST_CAP)?;
    let sig = http::get_body(&format!("{at}.minisig"), MANIFEST_TIMEOUT, SIGNATURE_CAP)?;
    let sig = String::from_utf8(sig).map_err(|_| anyhow!("the signature of {} is not text", shown(&at)))?;
    signature::verify(&key, &bytes, &sig).with_context(|| format!("the release manifest {}", shown(&at)))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| anyhow!("the release manifest {} is not text", shown(&at)))?;
    let m: Manifest = toml::from_str(text).map_err(|e| anyhow!("the release manifest {}: {e}", shown(&at)))?;
    parse(&m.version)?;
    if let Some(v) = version.filter(|v| parse(v).ok() != parse(&m.version).ok()) {
        bail!("asked for release {v}, but its signed manifest is for {}", m.version);
    }
    if m.target != TARGET {
        bail!("release {} is built for {}, this node runs {TARGET}", m.version, m.target);
    }
    if m.sha256.len() != 64 || !m.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("release {}: its manifest's sha256 is not 64 hex digits", m.version);
    }
    if m.size == 0 || m.size > BINARY_CAP {
        bail!("release {}: its manifest gives a size of {} bytes (at most {BINARY_CAP})", m.version, m.size);
    }
    Ok(m)
}

/// The release's binary, exactly as its manifest describes it.
pub fn binary(url: &str, m: &Manifest) -> Result<Vec<u8>> {
    let at = format!("{}/{}/bootstrap", base(url), m.version);
    let bytes = http::get_body(&at, BINARY_TIMEOUT, m.size)?;
    if bytes.len() as u64 != m.size {
        bail!("{}: {} bytes, the signed manifest says {} (a truncated download?)", shown(&at), bytes.len(), m.size);
    }
    let sum = sha256_hex(&bytes);
    if !sum.eq_ignore_ascii_case(&m.sha256) {
        bail!("{}: sha256 {sum}, the signed manifest says {} (corrupted or tampered with)", shown(&at), m.sha256);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_semver() {
        assert_eq!(compare("0.1.10", "0.1.9").unwrap(), Ordering::Greater);
        assert_eq!(compare("0.2.0", "0.2.0").unwrap(), Ordering::Equal);
        assert_eq!(compare("1.0.0-rc.1", "1.0.0").unwrap(), Ordering::Less);
        assert!(compare("latest", "0.1.0").is_err());
    }
}
