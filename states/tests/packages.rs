//! `packages`: planning from a fixture dpkg status under a temporary root, and apt's command
//! lines (one install for all missing packages, update only when needed) with a fake runner.

mod fake;
mod support;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use states::kinds::packages::PackagesState;
use states::sys::apt::Apt;
use states::sys::dpkg_status::DpkgStatus;
use states::sys::package_manager::PackageManager;
use states::State;
use support::*;

fn stanza(name: &str, status: &str) -> String {
    format!(
        "Package: {name}\nStatus: {status}\nPriority: optional\nSection: admin\nInstalled-Size: 100\n\
         Maintainer: Debian <debian@example.org>\nArchitecture: amd64\nVersion: 1.0-1\n\
         Depends: libc6 (>= 2.34)\nDescription: the {name} package\n a long description of what the {name} package does, as Debian writes them,\n over several lines of text that the parser must skip quickly because the\n status file of a full system is one to two megabytes and is read every run.\n .\n more text: Conffiles, MD5 sums and so on make the real stanzas as long.\n\n"
    )
}

fn write_status(root: &Path, pkgs: &[(&str, &str)]) {
    let text: String = pkgs.iter().map(|(n, s)| stanza(n, s)).collect();
    fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    fs::write(root.join("var/lib/dpkg/status"), text).unwrap();
}

fn with_index(root: &Path) {
    fs::create_dir_all(root.join("var/lib/apt/lists")).unwrap();
    fs::write(root.join("var/lib/apt/lists/_srv_repo_._Packages"), "").unwrap();
}

fn state(params: &str) -> anyhow::Result<PackagesState> {
    PackagesState::build(toml::from_str(params).unwrap(), Box::new(Apt))
}

fn summaries(cx: &states::Context, s: &PackagesState) -> Vec<String> {
    s.plan(cx).unwrap().changes.iter().map(|c| c.summary.clone()).collect()
}

const INSTALLED: &str = "install ok installed";

#[test]
fn plan_names_exactly_what_differs() {
    let root = tempfile::tempdir().unwrap();
    write_status(
        root.path(),
        &[
            ("cron", INSTALLED),
            ("haproxy", "deinstall ok config-files"),
            ("exim4", INSTALLED),
            ("vim", "hold ok installed"),
        ],
    );
    let cx = cx(root.path());
    let s = state(
        r#"installed = ["haproxy", "cron", "curl", "vim"]
absent = ["exim4", "nano"]"#,
    )
    .unwrap();
    assert_eq!(summaries(&cx, &s), ["install haproxy, curl", "remove exim4"]);
    assert_eq!(s.target(), "haproxy cron curl vim; absent: exim4 nano");

    // Converged: nothing to do (a fresh context: the status is read once per run).
    write_status(root.path(), &[("cron", INSTALLED), ("haproxy", INSTALLED), ("curl", INSTALLED), ("vim", INSTALLED)]);
    let cx = support::cx(root.path());
    assert!(s.plan(&cx).unwrap().is_empty());
    // A tree without a dpkg database has nothing installed.
    let bare = tempfile::tempdir().unwrap();
    assert_eq!(summaries(&support::cx(bare.path()), &state(r#"installed = ["cron"]"#).unwrap()), ["install cron"]);
}

#[test]
fn through_a_role_check_reports_pending_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    write_status(root.path(), &[("cron", INSTALLED)]);
    let cx = cx(root.path());
    let role = "[[state]]\nid = \"pkgs\"\ntype = \"packages\"\ninstalled = [\"cron\", \"curl\"]\n";
    let nodes = nodes(&cx, role, &[]).unwrap();
    let r = check(&cx, &nodes);
    assert_eq!(r.pending, 1);
    assert_eq!(r.states[0].changes[0].summary, "install curl");
    assert_eq!(r.states[0].target, "cron curl");
}

#[test]
fn bad_params_are_clear_errors() {
    let err = |p: &str| state(p).err().map(|e| format!("{e:#}")).unwrap_or_else(|| panic!("accepted: {p}"));
    assert!(err(r#"instaled = ["cron"]"#).contains("unknown field `instaled`"));
    assert!(err(r#"installed = ["Cron"]"#).contains("`Cron` is not a valid Debian package name"));
    assert!(err(r#"installed = ["-y"]"#).contains("not a valid"));
    assert!(err(r#"installed = ["cron=3.0"]"#).contains("not a valid"));
    assert!(err(r#"installed = "cron""#).contains("invalid type"));
    assert!(err(r#"installed = ["cron"]
absent = ["cron"]"#)
    .contains("`cron` is both in `installed` and in `absent`"));
    assert!(err("").contains("needs `installed` and/or `absent`"));
}

/// The dpkg database shared by the run: read once, re-read after apt changed it.
#[test]
fn status_is_read_once_and_invalidated_after_apt() {
    let root = tempfile::tempdir().unwrap();
    write_status(root.path(), &[]);
    with_index(root.path());
    let r = root.path().to_path_buf();
    // The fake apt "installs" by writing the status file, as dpkg would.
    let (cx, log) = fake::cx(root.path(), move |cmd| {
        if cmd.args.contains(&"install".to_string()) {
            write_status(&r, &[("cron", INSTALLED), ("curl", INSTALLED)]);
        }
        fake::ok()
    });
    let s = state(r#"installed = ["cron", "curl"]"#).unwrap();
    let first = Apt::status(&cx).unwrap();
    assert!(Arc::ptr_eq(&first, &Apt::status(&cx).unwrap()), "parsed twice in one run");
    let plan = s.plan(&cx).unwrap();
    Apt.install(&cx, &["cron".into(), "curl".into()]).unwrap();
    assert_eq!(log.cmds().len(), 1);
    assert!(s.plan(&cx).unwrap().is_empty(), "stale dpkg status after install");
    // The state itself refuses to touch a tree: packages need the running system.
    let e = s.apply(&cx, &plan).unwrap_err().to_string();
    assert!(e.contains("only be managed on the running system"), "{e}");
}

fn has_opt(cmd: &states::engine::runner::Cmd, opt: &str) -> bool {
    cmd.args.windows(2).any(|w| w[0] == "-o" && w[1] == opt)
}

#[test]
fn one_install_for_all_missing_packages_without_update_when_the_index_exists() {
    let root = tempfile::tempdir().unwrap();
    with_index(root.path());
    let (cx, log) = fake::cx(root.path(), |_| fake::ok());
    Apt.install(&cx, &["haproxy".into(), "cron".into()]).unwrap();
    let cmds = log.cmds();
    assert_eq!(cmds.len(), 1, "{:?}", log.lines());
    let c = &cmds[0];
    // What matters, not how apt spells it: one non-interactive install of exactly these
    // packages, without recommends, keeping the node's changed configuration files.
    assert_eq!(c.program, "apt-get");
    let args = c.args.join(" ");
    assert!(args.contains("install") && c.args.ends_with(&["haproxy".into(), "cron".into()]), "{args}");
    assert!(args.contains("--no-install-recommends") && args.contains("--force-confold"), "{args}");
    assert!(has_opt(c, "DPkg::Lock::Timeout=120"), "{}", c.display());
    assert!(c.env.contains(&("DEBIAN_FRONTEND".into(), "noninteractive".into())));
    assert!(c.timeout.as_secs() > 120, "the timeout must cover the lock wait");

    log.clear();
    Apt.remove(&cx, &["exim4".into()]).unwrap();
    let line = log.lines().join("\n");
    assert!(line.ends_with("remove -y exim4") && !line.contains("purge"), "{line}");
}

#[test]
fn update_first_when_the_index_is_missing() {
    let root = tempfile::tempdir().unwrap();
    let (cx, log) = fake::cx(root.path(), |_| fake::ok());
    Apt.install(&cx, &["cron".into()]).unwrap();
    let lines = log.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].ends_with(" update"), "{lines:?}");
    assert!(lines[1].contains(" install ") && lines[1].ends_with(" cron"), "{lines:?}");
}

#[test]
fn stale_index_updates_and_retries_once() {
    let root = tempfile::tempdir().unwrap();
    with_index(root.path());
    let installs = Arc::new(AtomicUsize::new(0));
    let n = installs.clone();
    let (cx, log) = fake::cx(root.path(), move |cmd| {
        if cmd.args.contains(&"install".to_string()) && n.fetch_add(1, Ordering::SeqCst) == 0 {
            return fake::fail(100, "E: Unable to locate package haproxy\n");
        }
        fake::ok()
    });
    Apt.install(&cx, &["haproxy".into()]).unwrap();
    let verbs: Vec<String> = log.cmds().iter().map(|c| c.args[c.args.len() - 1].clone()).collect();
    assert_eq!(verbs, ["haproxy", "update", "haproxy"]);

    // Still unknown after the update: one retry only, then apt's own message.
    let (cx, log) = fake::cx(root.path(), |cmd| {
        if cmd.args.contains(&"install".to_string()) {
            return fake::fail(100, "Reading package lists...\nE: Unable to locate package no-such-pkg\n");
        }
        fake::ok()
    });
    let e = Apt.install(&cx, &["no-such-pkg".into()]).unwrap_err().to_string();
    assert_eq!(log.cmds().len(), 3, "{:?}", log.lines());
    assert!(e.contains("E: Unable to locate package no-such-pkg") && !e.contains("Reading"), "{e}");

    // Any other failure is not retried.
    let (cx, log) =
        fake::cx(root.path(), |_| fake::fail(100, "E: Sub-process /usr/bin/dpkg returned an error code (1)\n"));
    assert!(Apt.install(&cx, &["cron".into()]).is_err());
    assert_eq!(log.cmds().len(), 1);
}

#[test]
fn a_held_lock_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    with_index(root.path());
    let (cx, _log) = fake::cx(root.path(), |_| {
        fake::fail(100, "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (apt-get)\nE: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another process using it?\n")
    });
    let e = Apt.install(&cx, &["cron".into()]).unwrap_err().to_string();
    assert!(e.contains("locked by another process (held by process 4242 (apt-get)); waited 120s"), "{e}");
}

/// A no-op plan costs no child process and reads the package database once per run, however
/// many packages and plans: the work is counted here; the figures are in BENCHMARKS.md.
#[test]
fn noop_plans_read_the_status_file_once_and_start_no_process() {
    let root = tempfile::tempdir().unwrap();
    // A full system's status file: ~3,000 packages, ~2 MB.
    let names: Vec<String> = (0..3000).map(|i| format!("package-{i}")).collect();
    let pkgs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), INSTALLED)).collect();
    write_status(root.path(), &pkgs);
    let status = root.path().join("var/lib/dpkg/status");
    assert_eq!(DpkgStatus::read(&status).unwrap().len(), 3000);
    let wanted: Vec<String> = names.iter().step_by(60).take(50).map(|n| format!("\"{n}\"")).collect();
    let s = state(&format!("installed = [{}]", wanted.join(", "))).unwrap();
    let (cx, log) = fake::cx(root.path(), |_| fake::ok());
    assert!(s.plan(&cx).unwrap().is_empty());
    // Gone after the first plan: later plans of this run use what was read.
    fs::remove_file(&status).unwrap();
    for _ in 0..100 {
        assert!(s.plan(&cx).unwrap().is_empty());
    }
    assert!(log.cmds().is_empty(), "a no-op plan started {:?}", log.lines());
}

#[test]
fn an_install_interrupted_by_a_killed_run_is_finished_then_retried() {
    let root = tempfile::tempdir().unwrap();
    with_index(root.path());
    let installs = Arc::new(AtomicUsize::new(0));
    let n = installs.clone();
    let (cx, log) = fake::cx(root.path(), move |cmd| {
        if cmd.args.contains(&"install".to_string()) && n.fetch_add(1, Ordering::SeqCst) == 0 {
            return fake::fail(
                100,
                "E: dpkg was interrupted, you must manually run 'dpkg --configure -a' to correct the problem.\n",
            );
        }
        fake::ok()
    });
    Apt.install(&cx, &["haproxy".into()]).unwrap();
    let lines = log.lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[1].starts_with("dpkg --configure -a"), "{lines:?}");
    assert!(lines[2].ends_with("haproxy"), "{lines:?}");
}
