//! The offline apt repository: every package the roles (and the tests' probes) may install,
//! downloaded once per Debian release from Debian's archive and indexed as a flat repository. Nodes see it
//! read-only at `/srv/repo` as their only apt source, so no test needs the internet.

use crate::cmd;
use crate::debian::Debian;
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
    // the fault scenario kills runs at chosen system calls
    "strace",
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

/// Path of the release's cached repository (a directory of .debs plus `Packages` and `Release`).
pub fn repo(debian: Debian) -> PathBuf {
    static REPOS: [OnceLock<PathBuf>; Debian::ALL.len()] = [const { OnceLock::new() }; Debian::ALL.len()];
    REPOS[debian.index()].get_or_init(|| build(debian)).clone()
}

fn build(debian: Debian) -> PathBuf {
    let base = crate::image::base(debian);
    // The base image's path already encodes its own key.
    let key = crate::cache::key(&["repo-v2", base.to_str().unwrap(), &PACKAGES.join(" ")]);
    crate::cache::get_or_build(&format!("repo-{key}"), |tmp| {
        fs::create_dir_all(tmp.join("partial")).unwrap();
        // apt on the host with state of its own: the release's sources and package lists, not
        // the host's (which may be another release), resolved against the base image's dpkg
        // status so everything missing from a fresh node is downloaded.
        let apt = tmp.join("apt-state");
        for d in ["lists/partial", "cache", "parts"] {
            fs::create_dir_all(apt.join(d)).unwrap();
        }
        fs::write(apt.join("sources.list"), debian.sources()).unwrap();
        let options = [
            format!("Dir::Etc::SourceList={}", apt.join("sources.list").display()),
            format!("Dir::Etc::SourceParts={}", apt.join("parts").display()),
            // Nor the host's pins.
            format!("Dir::Etc::Preferences={}", apt.join("preferences").display()),
            format!("Dir::Etc::PreferencesParts={}", apt.join("parts").display()),
            format!("Dir::State::Lists={}", apt.join("lists").display()),
            format!("Dir::Cache={}", apt.join("cache").display()),
            format!("Dir::Cache::archives={}", tmp.display()),
            format!("Dir::State::status={}", base.join("var/lib/dpkg/status").display()),
            "APT::Install-Recommends=false".to_string(),
            "Acquire::Languages=none".to_string(),
        ];
        let apt_get = || {
            let mut c = cmd::host("apt-get");
            for o in &options {
                c.arg("-o").arg(o);
            }
            c
        };
        cmd::run_ok(apt_get().args(["update", "-qq"]), Duration::from_secs(900));
        let mut c = apt_get();
        c.args(["install", "--download-only", "-y", "--no-install-recommends"]).args(PACKAGES);
        cmd::run_ok(&mut c, Duration::from_secs(900));
        let _ = fs::remove_dir_all(tmp.join("partial"));
        let _ = fs::remove_file(tmp.join("lock"));
        crate::cleanup::remove_tree(&apt);
        // Index into memory first: `apt-ftparchive release .` would otherwise list a
        // half-written Release file inside itself.
        let packages = apt_ftparchive(tmp, "packages");
        fs::write(tmp.join("Packages"), packages).unwrap();
        let release = apt_ftparchive(tmp, "release");
        fs::write(tmp.join("Release"), release).unwrap();
    })
}

fn apt_ftparchive(dir: &std::path::Path, what: &str) -> String {
    let mut c = cmd::host("apt-ftparchive");
    c.args([what, "."]).current_dir(dir);
    cmd::run_ok(&mut c, Duration::from_secs(120))
}
