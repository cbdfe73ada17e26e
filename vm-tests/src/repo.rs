//! The offline apt repository: every package the roles (and the tests' probes) may install,
//! downloaded once from the host's apt sources and indexed as a flat repository. Nodes see it
//! read-only at `/srv/repo` as their only apt source, so no test needs the internet.

use crate::cmd;
use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// Everything a node may `apt-get install`, with dependencies resolved against the base image.
/// Add a package here when a role starts using it; the cache key changes and the repository is
/// rebuilt on the next run.
pub const PACKAGES: &[&str] = &[
    // app role
    "haproxy",
    "nftables",
    "cron",
    "curl",
    "ca-certificates",
    "openssl",
    // db role, and the HA cluster (Patroni on etcd, from the distribution)
    "postgresql",
    "postgresql-client",
    "patroni",
    "etcd-server",
    "etcd-client",
    // probes used by the tests themselves: dig/nsupdate, kdig/knsupdate, port probes, JSON
    "bind9-dnsutils",
    "knot-dnsutils",
    "netcat-openbsd",
    "jq",
    // sshd, so firewall scenarios can check that the admin port stays open
    "openssh-server",
    // the no-op benchmark on a node (bench/node)
    "hyperfine",
    "time",
    // the floating IP (app role)
    "keepalived",
    // shared storage: the app nodes' SSHFS mounts, the tests' ssh/sftp probes
    "sshfs",
    "openssh-client",
    // the swarm role (Docker from the distribution)
    "docker.io",
];

/// Path of the cached repository (a directory of .debs plus `Packages` and `Release`).
pub fn repo() -> PathBuf {
    static REPO: OnceLock<PathBuf> = OnceLock::new();
    REPO.get_or_init(|| {
        let base = crate::image::base();
        // The base image's path already encodes its own key.
        let key = crate::cache::key(&["repo-v1", base.to_str().unwrap(), &PACKAGES.join(" ")]);
        crate::cache::get_or_build(&format!("repo-{key}"), |tmp| {
            fs::create_dir_all(tmp.join("partial")).unwrap();
            let status = base.join("var/lib/dpkg/status");
            // Resolve against the base image's dpkg status (so everything missing from a fresh
            // node is downloaded) using the host's package lists (`apt-get update` on the host).
            let mut c = cmd::host("apt-get");
            c.arg("-o")
                .arg(format!("Dir::State::status={}", status.display()))
                .arg("-o")
                .arg(format!("Dir::Cache::archives={}", tmp.display()))
                .args(["-o", "APT::Install-Recommends=false"])
                .args(["install", "--download-only", "-y", "--no-install-recommends"])
                .args(PACKAGES);
            cmd::run_ok(&mut c, Duration::from_secs(900));
            let _ = fs::remove_dir_all(tmp.join("partial"));
            let _ = fs::remove_file(tmp.join("lock"));
            // Index into memory first: `apt-ftparchive release .` would otherwise list a
            // half-written Release file inside itself.
            let packages = apt_ftparchive(tmp, "packages");
            fs::write(tmp.join("Packages"), packages).unwrap();
            let release = apt_ftparchive(tmp, "release");
            fs::write(tmp.join("Release"), release).unwrap();
        })
    })
    .clone()
}

fn apt_ftparchive(dir: &std::path::Path, what: &str) -> String {
    let mut c = cmd::host("apt-ftparchive");
    c.args([what, "."]).current_dir(dir);
    cmd::run_ok(&mut c, Duration::from_secs(120))
}
