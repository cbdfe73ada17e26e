//! The on-disk cache for slow, reusable artefacts (base image, offline repository).
//!
//! It lives outside the repository, keyed by a hash of each artefact's inputs, so a change of
//! recipe builds a new entry instead of reusing a stale one. Builds happen under an exclusive
//! `flock` and into a temporary directory renamed into place at the end, so parallel test
//! processes wait for one builder, and an interrupted build never looks complete.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use crate::places::cache_root as root;

/// A stable short hash of the inputs (FNV-1a, 64 bit). Stable across Rust versions, unlike
/// `DefaultHasher`, so the cache survives toolchain updates.
pub fn key(inputs: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in inputs {
        for b in part.bytes().chain([0u8]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Returns `root()/name`, building it with `build(tmp_dir)` first if it doesn't exist yet.
/// `build` fills the empty directory it is given; on success it becomes `root()/name`.
pub fn get_or_build(name: &str, build: impl FnOnce(&Path)) -> PathBuf {
    let root = root();
    let done = root.join(name);
    if done.is_dir() {
        return done;
    }
    fs::create_dir_all(&root).unwrap_or_else(|e| panic!("cannot create cache dir {}: {e}", root.display()));
    let lock_path = root.join(format!("{name}.lock"));
    let lock = File::create(&lock_path).unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
    // Released when `lock` is dropped, also when `build` panics.
    lock.lock().unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
    if done.is_dir() {
        return done; // another process built it while we waited
    }
    let tmp = root.join(format!("{name}.tmp-{}", std::process::id()));
    remove_stale_tmp(&root, name);
    fs::create_dir_all(&tmp).unwrap();
    eprintln!("[vm-tests] building cache entry {} (once)…", done.display());
    let t = Instant::now();
    build(&tmp);
    fs::rename(&tmp, &done).unwrap_or_else(|e| panic!("cannot rename {} to {}: {e}", tmp.display(), done.display()));
    eprintln!("[timing] cache build {name}: {:.1}s", t.elapsed().as_secs_f64());
    done
}

/// Leftovers of builds that were interrupted (we hold the lock, so nobody is using them).
fn remove_stale_tmp(root: &Path, name: &str) {
    let prefix = format!("{name}.tmp-");
    for e in fs::read_dir(root).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            crate::cleanup::remove_tree(&e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_is_stable_and_input_sensitive() {
        // Pinned: a change here would silently rebuild every cache entry.
        assert_eq!(super::key(&["a", "b"]), super::key(&["a", "b"]));
        assert_ne!(super::key(&["a", "b"]), super::key(&["ab"]));
        assert_eq!(super::key(&[]), "cbf29ce484222325");
    }
}
