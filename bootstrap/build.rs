//! Embeds `roles/` (role TOML files and templates) into the binary as (path, text) pairs, and
//! the release identity: `BOOTSTRAP_RELEASE_KEY` (the minisign public key self-update trusts;
//! none: self-update refuses) and `BOOTSTRAP_VERSION` (default: the crate's version).

use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let roles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../roles").canonicalize().expect("roles/ exists");
    // A directory here makes cargo rerun this script when anything inside it changes.
    println!("cargo:rerun-if-changed={}", roles.display());
    let mut files = Vec::new();
    walk(&roles, &mut files);
    files.sort();
    let mut out = String::from("pub static FILES: &[(&str, &str)] = &[\n");
    for f in files {
        let rel = f.strip_prefix(&roles).unwrap().to_str().expect("utf-8 path");
        out += &format!("    ({rel:?}, include_str!({:?})),\n", f.display().to_string());
    }
    out += "];\n";
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("embedded_roles.rs");
    fs::write(dest, out).unwrap();

    for var in ["BOOTSTRAP_RELEASE_KEY", "BOOTSTRAP_VERSION"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let key = std::env::var("BOOTSTRAP_RELEASE_KEY").unwrap_or_default();
    let version = std::env::var("BOOTSTRAP_VERSION").unwrap_or_else(|_| env!("CARGO_PKG_VERSION").to_string());
    println!("cargo:rustc-env=BOOTSTRAP_RELEASE_KEY={}", key.trim());
    println!("cargo:rustc-env=BOOTSTRAP_BUILD_VERSION={}", version.trim());
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, files);
        } else if !p.file_name().unwrap().to_string_lossy().starts_with('.') {
            files.push(p);
        }
    }
}
