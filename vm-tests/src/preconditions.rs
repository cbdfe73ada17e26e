//! Checks that this host can run the lab at all. A missing prerequisite is a test FAILURE with a
//! message saying what to install, never a silent skip: a skipped end-to-end suite looks green.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// Host packages the CI script installs (`apt-get install -y ...`).
pub const HOST_PACKAGES: &[&str] = &[
    "debootstrap",
    "systemd-container",
    "nftables",
    "knot",
    "knot-dnsutils",
    "pebble",
    "dpkg-dev",
    "apt-utils",
    "iproute2",
    "haproxy",
    "openssl",
];

/// (program, package providing it) for every host tool the library calls.
const TOOLS: &[(&str, &str)] = &[
    ("debootstrap", "debootstrap"),
    ("systemd-nspawn", "systemd-container"),
    ("nft", "nftables"),
    ("knotd", "knot"),
    ("knotc", "knot"),
    ("kdig", "knot-dnsutils"),
    ("knsupdate", "knot-dnsutils"),
    ("pebble", "pebble"),
    ("dpkg-scanpackages", "dpkg-dev"),
    ("apt-ftparchive", "apt-utils"),
    ("ip", "iproute2"),
    ("haproxy", "haproxy"),
    ("openssl", "openssl"),
    ("nsenter", "util-linux"),
    ("apt-get", "apt"),
];

/// Panics with a clear message unless we are root, have every host tool, and can create a
/// network namespace. Cheap after the first call (the result is remembered per process).
pub fn check() {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(msg) = RESULT.get_or_init(probe) {
        panic!("vm-tests preconditions not met:\n{msg}");
    }
}

fn probe() -> Result<(), String> {
    let mut problems = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        problems.push("must run as root (network namespaces, systemd-nspawn, debootstrap)".to_string());
    }
    let mut missing_pkgs: Vec<&str> = Vec::new();
    let mut missing_tools = Vec::new();
    for (tool, pkg) in TOOLS {
        if find_in_path(tool).is_none() {
            missing_tools.push(*tool);
            if !missing_pkgs.contains(pkg) {
                missing_pkgs.push(pkg);
            }
        }
    }
    if !missing_tools.is_empty() {
        problems.push(format!(
            "missing host tools: {}\n  install with: apt-get update && apt-get install -y {}\n  (all host packages: {})",
            missing_tools.join(" "),
            missing_pkgs.join(" "),
            HOST_PACKAGES.join(" ")
        ));
    }
    if !Path::new("/var/lib/apt/lists")
        .read_dir()
        .map(|d| {
            d.flatten().any(|e| {
                e.file_name().to_string_lossy().ends_with("_Packages")
                    || e.file_name().to_string_lossy().contains("_Packages.")
            })
        })
        .unwrap_or(false)
    {
        problems.push(
            "the host has no apt package lists (needed to build the offline repository): run apt-get update".into(),
        );
    }
    if problems.is_empty() {
        // Only worth trying once we know we are root and have `ip`.
        let name = format!("bvt-probe-{}", std::process::id());
        let ok = Command::new("ip").args(["netns", "add", &name]).output().map(|o| o.status.success()).unwrap_or(false);
        let _ = Command::new("ip").args(["netns", "delete", &name]).output();
        if !ok {
            problems.push("cannot create a network namespace (`ip netns add` failed): run as real root, not in a restricted container".into());
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// The full path of `program` found in `$PATH` (plus the sbin directories root normally has).
pub fn find_in_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file());
    found
}
