//! The base image: a minimal Debian (bookworm or trixie) with systemd, debootstrapped once per
//! release and cached. Nodes boot from copies of it, never from the cached tree itself.

use crate::cmd;
use crate::debian::Debian;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// Packages on top of `minbase`: what a fresh cloud VM has and the lab needs (systemd as PID 1,
/// ip, ping, wget for "download the binary", CA certificates).
pub const INCLUDE: &str = "systemd-sysv,dbus,iproute2,iputils-ping,procps,ca-certificates,netbase,wget,less";
/// Bump when `customize` changes, so cached images made by the old recipe are not reused.
const RECIPE: &str = "base-v1";

/// Path of the release's cached base root filesystem, building it on first use (~1 min).
pub fn base(debian: Debian) -> PathBuf {
    static BASES: [OnceLock<PathBuf>; Debian::ALL.len()] = [const { OnceLock::new() }; Debian::ALL.len()];
    BASES[debian.index()].get_or_init(|| build(debian)).clone()
}

fn build(debian: Debian) -> PathBuf {
    crate::preconditions::check();
    let args = debootstrap_args(debian);
    let key = crate::cache::key(&[RECIPE, &args.join(" ")]);
    crate::cache::get_or_build(&format!("base-{key}"), |tmp| {
        let rootfs = tmp.join("rootfs");
        // Per release: debootstrap takes whatever .debs it finds there.
        let debs = crate::cache::root().join(format!("debootstrap-debs-{}", debian.suite()));
        fs::create_dir_all(&debs).unwrap();
        let mut c = cmd::host("debootstrap");
        c.arg(format!("--cache-dir={}", debs.display())).args(&args[..2]);
        c.args([debian.suite(), rootfs.to_str().unwrap(), crate::debian::MIRROR]);
        cmd::run_ok(&mut c, Duration::from_secs(900));
        customize(&rootfs);
    })
    .join("rootfs")
}

fn debootstrap_args(debian: Debian) -> Vec<String> {
    vec![
        "--variant=minbase".into(),
        format!("--include={INCLUDE}"),
        debian.suite().into(),
        crate::debian::MIRROR.into(),
    ]
}

/// Turns the debootstrap result into a lab-ready image. Per-node identity (hostname, address,
/// machine-id) is written when a node is created, not here.
fn customize(root: &Path) {
    let w = |p: &str, s: &str| fs::write(root.join(p), s).unwrap_or_else(|e| panic!("write {p}: {e}"));
    // The offline repository is the only package source: tests never depend on the internet.
    w("etc/apt/sources.list", "deb [trusted=yes] file:/srv/repo ./\n");
    // Skip translations and keep the image small.
    w("etc/apt/apt.conf.d/90vm-tests", "Acquire::Languages \"none\";\n");
    // debootstrap copied the host's resolv.conf and hostname; nodes get their own.
    let _ = fs::remove_file(root.join("etc/resolv.conf"));
    w("etc/resolv.conf", "nameserver 198.18.0.1\n");
    w("etc/hostname", "localhost\n");
    // Each node gets a fresh machine-id; dbus must follow it instead of keeping a copy.
    w("etc/machine-id", "");
    let _ = fs::remove_file(root.join("var/lib/dbus/machine-id"));
    symlink("/etc/machine-id", root.join("var/lib/dbus/machine-id")).unwrap();
    let mut enable = cmd::host("chroot");
    enable.args([root.to_str().unwrap(), "systemctl", "enable", "systemd-networkd"]);
    cmd::run_ok(&mut enable, Duration::from_secs(60));
    // Periodic apt runs would take the dpkg lock at random moments in the middle of a test.
    let mut mask = cmd::host("chroot");
    mask.args([root.to_str().unwrap(), "systemctl", "mask", "apt-daily.timer", "apt-daily-upgrade.timer"]);
    cmd::run_ok(&mut mask, Duration::from_secs(60));
    // The .debs debootstrap left behind only make every node copy slower.
    for e in fs::read_dir(root.join("var/cache/apt/archives")).into_iter().flatten().flatten() {
        if e.path().extension().is_some_and(|x| x == "deb") {
            let _ = fs::remove_file(e.path());
        }
    }
}
