//! The binary under test. The library never builds it: tests must exercise the exact static
//! artefact that gets shipped, built by the CI script beforehand.

use std::path::PathBuf;

pub const BUILD_HINT: &str = "cargo build --release --target x86_64-unknown-linux-musl -p bootstrap";

/// `$BOOTSTRAP_BIN`, or `<workspace>/target/x86_64-unknown-linux-musl/release/bootstrap`.
/// Panics with the build command if it is missing.
pub fn bootstrap_bin() -> PathBuf {
    let path = match std::env::var_os("BOOTSTRAP_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("vm-tests lives inside the workspace")
            .join("target/x86_64-unknown-linux-musl/release/bootstrap"),
    };
    if !path.is_file() {
        panic!(
            "the bootstrap binary is missing at {}\nbuild it with: {BUILD_HINT}\n(or point BOOTSTRAP_BIN at it)",
            path.display()
        );
    }
    path
}
