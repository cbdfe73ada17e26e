//! The releases a test serves: made by `scripts/release` with a throwaway key before the suite
//! (`scripts/test`): the binary under test (the current version) and the next version, both
//! with that key's public half built in. Tests also sign broken releases of their own with it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{bootstrap_bin, HttpServer};

/// Where `scripts/test` puts what this module reads.
const DIR_ENV: &str = "BOOTSTRAP_TEST_RELEASES";
const KEY_ENV: &str = "BOOTSTRAP_TEST_RELEASE_KEY";

pub struct Releases {
    pub dir: PathBuf,
    /// The minisign secret key the releases are signed with (unencrypted: a test key).
    pub key: PathBuf,
    /// The binary under test's version.
    pub current: String,
    /// The newest release (`latest/`).
    pub next: String,
}

fn version_in(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    text.lines()
        .find_map(|l| l.strip_prefix("version = \"").and_then(|v| v.strip_suffix('"')))
        .unwrap_or_else(|| panic!("no version in {}", manifest.display()))
        .to_string()
}

impl Releases {
    /// The releases `scripts/test` made; panics with what to run when they are missing.
    pub fn from_env() -> Releases {
        let get = |var: &str| {
            std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
                panic!("{var} is not set: run the suite with scripts/test, which builds signed test releases")
            })
        };
        let (dir, key) = (get(DIR_ENV), get(KEY_ENV));
        let out = Command::new(bootstrap_bin()).arg("--version").output().unwrap();
        let current = String::from_utf8_lossy(&out.stdout).trim().trim_start_matches("bootstrap ").to_string();
        let next = version_in(&dir.join("latest/manifest.toml"));
        assert_ne!(current, next, "the test releases need a version newer than the binary under test");
        Releases { dir, key, current, next }
    }

    /// Serve every release under `releases/`; returns the base URL for `release_url`.
    pub fn serve(&self, http: &HttpServer) -> String {
        for sub in ["latest", &self.current, &self.next] {
            for e in std::fs::read_dir(self.dir.join(sub)).unwrap().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                http.put_file(&format!("releases/{sub}/{name}"), &e.path());
            }
        }
        http.url("releases")
    }

    pub fn binary(&self, version: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(version).join("bootstrap")).unwrap()
    }

    /// Serve a release of our own making at `releases/VERSION/`: the binary, and a manifest
    /// (as given) signed with `key` (the release key unless another is given).
    pub fn publish(&self, http: &HttpServer, version: &str, manifest: &str, binary: &[u8], key: Option<&Path>) {
        let tmp = tempfile::tempdir().unwrap();
        let m = tmp.path().join("manifest.toml");
        std::fs::write(&m, manifest).unwrap();
        minisign(&["-S".as_ref(), "-s".as_ref(), key.unwrap_or(&self.key).as_os_str(), "-m".as_ref(), m.as_os_str()]);
        http.put(&format!("releases/{version}/manifest.toml"), manifest);
        http.put(
            &format!("releases/{version}/manifest.toml.minisig"),
            std::fs::read(tmp.path().join("manifest.toml.minisig")).unwrap(),
        );
        http.put(&format!("releases/{version}/bootstrap"), binary.to_vec());
    }
}

/// A manifest as `scripts/release` writes it, for `binary` as `version`.
pub fn manifest(version: &str, binary: &[u8]) -> String {
    format!(
        "version = \"{version}\"\ntarget = \"x86_64-unknown-linux-musl\"\nsha256 = \"{}\"\nsize = {}\n",
        states::engine::content::sha256_hex(binary),
        binary.len()
    )
}

/// A throwaway key pair that is not the release key: `DIR/other.key`.
pub fn other_key(dir: &Path) -> PathBuf {
    let (sk, pk) = (dir.join("other.key"), dir.join("other.pub"));
    minisign(&["-G".as_ref(), "-W".as_ref(), "-p".as_ref(), pk.as_os_str(), "-s".as_ref(), sk.as_os_str()]);
    sk
}

/// The reference minisign tool, which must succeed.
fn minisign(args: &[&std::ffi::OsStr]) {
    let o = Command::new("minisign")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("minisign (scripts/setup installs it)");
    assert!(o.status.success(), "minisign {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}
