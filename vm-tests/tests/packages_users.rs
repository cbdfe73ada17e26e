//! `packages`, `group` and `user` on a fresh Debian node whose only apt source is the offline
//! repository and whose package index was never fetched: the first run must update it by
//! itself. Then: idempotence, `--check` naming drift, a package removed by hand and a user
//! deleted by hand healed in one run, and a dpkg lock held by another process waited for.

use std::time::{Duration, Instant};

use vm_tests::operator::{run_test_role as bt, INSTALLED as BIN, TEST_ROLES as ROLES};
use vm_tests::report::{apply_test_role as apply, summaries};
use vm_tests::{bootstrap_bin, timed, Lab, Node};

const ROLE: &str = r#"
description = "issue 3 lab role: packages, a group, a user"

[[state]]
id = "pkgs"
type = "packages"
installed = ["cron", "curl"]
absent = ["less"]

[[state]]
id = "appgrp"
type = "group"
name = "appgrp"

# `crontab` comes with the cron package: the user must wait for it.
[[state]]
id = "appsvc"
type = "user"
name = "appsvc"
group = "appgrp"
groups = ["crontab"]
home = "/var/lib/appsvc"
create_home = true
requires = ["appgrp", "pkgs"]
"#;

/// Holds dpkg's frontend lock (an fcntl lock, as apt takes it) for 8 seconds, the way an
/// operator's `apt-get` or unattended-upgrades would. `struct flock` on x86_64: two shorts,
/// padding, two off_t, a pid_t, padding.
const HOLD_LOCK: &str = r#"use Fcntl qw(F_SETLKW F_WRLCK SEEK_SET O_RDWR O_CREAT);
sysopen(L, "/var/lib/dpkg/lock-frontend", O_RDWR | O_CREAT) or die "open";
my $lock = pack("s s x4 q q i x4", F_WRLCK, SEEK_SET, 0, 0, 0);
fcntl(L, F_SETLKW, $lock) or die "lock: $!";
open(M, ">", "/run/bt-locked") or die "marker"; close(M);
sleep 8;
"#;

fn installed(node: &Node, pkg: &str) -> bool {
    let r = node.run(&["dpkg-query", "-W", "-f", "${Status}", pkg]);
    r.stdout.trim() == "install ok installed"
}

#[test]
fn packages_users_converge_and_heal() {
    let total = Instant::now();
    let bin = std::fs::read(bootstrap_bin()).unwrap();
    let lab = timed("lab ready", || Lab::new("packages_users"));
    let node = timed("boot", || lab.boot("pkg1"));
    node.put_file(BIN, &bin, 0o755);
    node.put_file(&format!("{ROLES}/test.toml"), ROLE.as_bytes(), 0o644);
    node.put_file("/root/hold-lock.pl", HOLD_LOCK.as_bytes(), 0o644);

    // A fresh node has never fetched the index of its only source (the lists debootstrap left
    // are for deb.debian.org, which apt ignores now): the first install fails "Unable to
    // locate package" and must update the index by itself.
    let lists = node.exec(&["ls", "/var/lib/apt/lists"]).stdout;
    assert!(!lists.contains("srv_repo"), "expected no index for /srv/repo yet: {lists}");
    assert!(installed(&node, "less") && !installed(&node, "cron"));

    let r = timed("first apply (apt-get update + install cron curl, remove less, group, user)", || apply(&node));
    assert_eq!((r.changed, r.failed), (3, 0), "{r:#?}");
    assert_eq!(summaries(&r, "pkgs"), ["install cron, curl", "remove less"]);
    assert!(node.exec(&["ls", "/var/lib/apt/lists"]).stdout.contains("srv_repo"));
    assert!(installed(&node, "cron") && installed(&node, "curl") && !installed(&node, "less"));
    let passwd = node.run(&["getent", "passwd", "appsvc"]).assert_ok("getent passwd").stdout;
    let f: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!((f[5], f[6]), ("/var/lib/appsvc", "/usr/sbin/nologin"), "{passwd}");
    assert!(f[2].parse::<u32>().unwrap() < 1000, "a system uid: {passwd}");
    let group = node.run(&["getent", "group", "appgrp"]).assert_ok("getent group").stdout;
    assert_eq!(group.trim().split(':').nth(2), Some(f[3]), "primary group: {passwd} {group}");
    assert!(node.run(&["getent", "group", "crontab"]).stdout.trim().ends_with(":appsvc"));
    let shadow = node.run(&["getent", "shadow", "appsvc"]).stdout;
    assert!(shadow.starts_with("appsvc:!"), "no password, locked: {shadow}");
    assert_eq!(node.run(&["stat", "-c", "%U:%G %a", "/var/lib/appsvc"]).stdout.trim(), "appsvc:appgrp 750");

    // Idempotence: nothing to do, and fast.
    let r = timed("second apply (no-op)", || apply(&node));
    assert_eq!(r.changed, 0, "{r:#?}");
    eprintln!("[timing] no-op run inside the node (engine): {} ms", r.duration_ms);
    assert_eq!(bt(&node, &["--check"]).code, 0);

    // Drift: a package removed by hand is named by --check and reinstalled by one apply.
    node.run(&["apt-get", "remove", "-y", "-q", "curl"]).assert_ok("apt-get remove curl");
    let c = bt(&node, &["--check"]);
    assert_eq!(c.code, 2, "--check after drift:\n{}\n{}", c.stdout, c.stderr);
    assert!(c.stdout.contains("install curl"), "--check must name curl:\n{}", c.stdout);

    // Another process holds the dpkg lock: --check still works (it only reads), apt's real
    // message is the one our error parses, and apply waits for the lock instead of failing.
    node.run(&["systemd-run", "--unit=bt-hold-lock", "perl", "/root/hold-lock.pl"]).assert_ok("hold lock");
    let held = vm_tests::cmd::poll(Duration::from_secs(10), || node.exists("/run/bt-locked").then_some(()));
    assert!(held.is_some(), "the lock holder did not start:\n{}", node.journal(&["-u", "bt-hold-lock"]));
    assert_eq!(bt(&node, &["--check"]).code, 2, "--check while apt is locked");
    let busy = node.run(&["apt-get", "-q", "-o", "DPkg::Lock::Timeout=1", "install", "-y", "curl"]);
    let said = format!("{}{}", busy.stdout, busy.stderr);
    assert!(said.contains("Could not get lock") && said.contains("held by process"), "{said}");
    let t = Instant::now();
    let r = timed("apply waiting for the dpkg lock, then reinstalling curl", || apply(&node));
    assert!(t.elapsed().as_secs() >= 3, "apply did not wait for the lock");
    assert_eq!(r.changed, 1, "{r:#?}");
    assert_eq!(summaries(&r, "pkgs"), ["install curl"]);
    assert!(installed(&node, "curl"));
    assert_eq!(bt(&node, &["--check"]).code, 0);

    // A user deleted by hand is recreated (its home, kept by userdel, is owned again).
    node.run(&["userdel", "appsvc"]).assert_ok("userdel");
    let c = bt(&node, &["--check"]);
    assert_eq!(c.code, 2);
    assert!(c.stdout.contains("create system user appsvc"), "{}", c.stdout);
    let r = timed("apply recreating the user", || apply(&node));
    assert_eq!(r.changed, 1, "{r:#?}");
    node.run(&["getent", "passwd", "appsvc"]).assert_ok("user recreated");
    assert!(node.run(&["getent", "group", "crontab"]).stdout.trim().ends_with(":appsvc"));
    assert_eq!(node.run(&["stat", "-c", "%U:%G", "/var/lib/appsvc"]).stdout.trim(), "appsvc:appgrp");

    assert_eq!(apply(&node).changed, 0);
    assert_eq!(bt(&node, &["--check"]).code, 0);
    timed("teardown", move || {
        drop(node);
        drop(lab);
    });
    eprintln!("[timing] packages_users total: {:.1}s", total.elapsed().as_secs_f64());
}
