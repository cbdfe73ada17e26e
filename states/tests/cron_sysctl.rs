//! `cron` and `sysctl` against temporary roots; the live half of `sysctl` read-only on this
//! machine's /proc/sys (a dry run never writes).

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use states::kinds::cron::schedule;
use support::*;

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o7777
}

fn compile_err(role: &str) -> String {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    format!("{:#}", nodes(&cx, role, &[]).err().unwrap_or_else(|| panic!("accepted:\n{role}")))
}

const BACKUP: &str = r#"
[[state]]
id = "backup-job"
type = "cron"
name = "db-backup"
schedule = "30  2 * *   1-5"
user = "postgres"
command = "pg_dumpall > /var/backups/db-$(date +%F).sql"
env = { MAILTO = "", PATH = "/usr/sbin:/usr/bin:/sbin:/bin" }
"#;

#[test]
fn cron_entry_is_written_escaped_and_healed() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let nodes = nodes(&cx, BACKUP, &[]).unwrap();
    let path = root.path().join("etc/cron.d/db-backup");
    let want = "# managed by bootstrap (state `backup-job`); local changes are overwritten\n\
                MAILTO=\"\"\n\
                PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
                30 2 * * 1-5 postgres pg_dumpall > /var/backups/db-$(date +\\%F).sql\n";

    let r = check(&cx, &nodes);
    assert_eq!(r.pending, 1);
    assert_eq!(r.states[0].target, "/etc/cron.d/db-backup");
    let diff = r.states[0].changes[0].diff.as_deref().unwrap();
    assert!(diff.contains("+30 2 * * 1-5 postgres pg_dumpall > /var/backups/db-$(date +\\%F).sql"), "{diff}");
    assert!(!path.exists());

    assert_eq!(apply(&cx, &nodes).changed, 1);
    assert_eq!(fs::read_to_string(&path).unwrap(), want);
    let m = fs::metadata(&path).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o644, 0, 0));
    assert_eq!(check(&cx, &nodes).pending, 0);

    // cron ignores a group/world-writable file: mode drift is drift.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
    let r = check(&cx, &nodes);
    assert_eq!(r.states[0].changes[0].summary, "mode 0666 -> 0644");
    apply(&cx, &nodes);
    assert_eq!(mode(&path), 0o644);

    // An edit shows as a diff and is undone; a deleted entry comes back.
    fs::write(&path, want.replace("30 2", "0 3")).unwrap();
    let r = check(&cx, &nodes);
    let diff = r.states[0].changes[0].diff.as_deref().unwrap();
    assert!(diff.contains("-0 3 * * 1-5") && diff.contains("+30 2 * * 1-5"), "{diff}");
    fs::remove_file(&path).unwrap();
    assert_eq!(apply(&cx, &nodes).changed, 1);
    assert_eq!(fs::read_to_string(&path).unwrap(), want);
    assert_eq!(apply(&cx, &nodes).changed, 0);
}

#[test]
fn a_singleton_job_runs_on_the_authoritative_node_only() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let role = format!("{BACKUP}singleton = true\n");
    let path = root.path().join("etc/cron.d/db-backup");
    let here = nodes_as(&cx, &role, &[], serde_json::json!({ "authoritative": true })).unwrap();
    apply(&cx, &here);
    assert!(fs::read_to_string(&path).unwrap().contains("pg_dumpall"));
    // Another node (or this one, once the site names another): the job is removed.
    let elsewhere = nodes_as(&cx, &role, &[], serde_json::json!({ "authoritative": false })).unwrap();
    let r = check(&cx, &elsewhere);
    assert_eq!(r.pending, 1);
    apply(&cx, &elsewhere);
    assert!(!path.exists());
    assert_eq!(check(&cx, &elsewhere).pending, 0);
    // No authoritative node named: refused, never "everywhere".
    let e = format!("{:#}", nodes(&cx, &role, &[]).err().expect("a singleton without admin_node"));
    assert!(e.contains("set `admin_node`"), "{e}");
}

#[test]
fn cron_keywords_and_default_user() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let role = r#"
[[state]]
id = "at-boot"
type = "cron"
name = "at_boot"
schedule = "@reboot"
command = "echo 50% > /run/boot-note"
"#;
    apply(&cx, &nodes(&cx, role, &[]).unwrap());
    let text = fs::read_to_string(root.path().join("etc/cron.d/at_boot")).unwrap();
    assert!(text.ends_with("\n@reboot root echo 50\\% > /run/boot-note\n"), "{text}");
}

#[test]
fn schedules_as_cron_reads_them() {
    for ok in [
        "* * * * *",
        "*/5 * * * *",
        "0 0-23/2 1,15 * *",
        "0 4 * jan sun",
        "0 4 * JAN Mon",
        "59 23 31 12 7",
        "0,30 8-18 * * 1-5",
        "@hourly",
        "@annually",
    ] {
        schedule(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    assert_eq!(schedule("  5\t4 * *  * ").unwrap(), "5 4 * * *");
    let bad = [
        ("* * * *", "has 4 fields; cron needs 5"),
        ("* * * * * *", "has 6 fields"),
        ("60 * * * *", "minute field `60`: `60` is not a number from 0 to 59"),
        ("* 24 * * *", "hour field"),
        ("* * 0 * *", "day-of-month field `0`: `0` is not a number from 1 to 31"),
        ("* * * 13 *", "month field"),
        ("* * * * 8", "day-of-week field"),
        ("*/0 * * * *", "step `0` must be a number from 1"),
        ("5/10 * * * *", "a step needs `*` or a range before it"),
        ("30-10 * * * *", "range `30-10` runs backwards"),
        ("1,,2 * * * *", "`` is not a number"),
        ("* * * * mon-fri", "names only stand alone"),
        ("* * * * L", "`L` is not a number"),
        ("+5 * * * *", "`+5` is not a number"),
        ("@every 5m", "is not one of @reboot"),
        ("@Daily", "is not one of"),
    ];
    for (s, want) in bad {
        let e = format!("{:#}", schedule(s).err().unwrap_or_else(|| panic!("accepted `{s}`")));
        assert!(e.contains(want), "{s}: {e}");
    }
}

#[test]
fn bad_cron_entries_are_refused_with_clear_errors() {
    let entry = |name: &str, extra: &str| {
        format!("[[state]]\nid = \"j\"\ntype = \"cron\"\nname = \"{name}\"\nschedule = \"* * * * *\"\ncommand = \"true\"\n{extra}\n")
    };
    let cases = [
        (entry("job.cron", ""), "`name` `job.cron` must be letters, digits, `_` and `-` only"),
        (entry("a/b", ""), "must be letters, digits"),
        (entry("", ""), "must be letters, digits"),
        (entry("j", "user = \"no body\""), "`user` `no body` is not a valid user name"),
        (entry("j", "env = { \"1X\" = \"y\" }"), "`env` name `1X` is not a variable name"),
        (entry("j", "env = { X = \" padded\" }"), "`env` value of `X` can't be written for cron"),
        (entry("j", "schedule2 = 1"), "unknown field `schedule2`"),
        (entry("j", "").replace("\"true\"", "\"echo a\\necho b\""), "`command` must be one non-empty line"),
        (entry("j", "").replace("\"true\"", "\"date +\\\\%s\""), "write `%` plainly"),
        (entry("j", "").replace("* * * * *", "* * * 0 *"), "month field `0`"),
        (
            entry("j", "") + &entry("j", "").replace("id = \"j\"", "id = \"k\""),
            "state `k` (cron) manages path /etc/cron.d/j, which state `j` (cron) at ",
        ),
    ];
    for (role, want) in cases {
        let e = compile_err(&role);
        assert!(e.contains(want), "{role}\n=> {e}");
    }
}

fn sysctl(id: &str, name: &str, value: &str) -> String {
    format!("[[state]]\nid = \"{id}\"\ntype = \"sysctl\"\nname = \"{name}\"\nvalue = {value}\n")
}

#[test]
fn sysctl_under_a_root_manages_the_file_only() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let role =
        sysctl("fwd", "net.ipv4.ip_forward", "1") + &sysctl("rmem", "net.ipv4.tcp_rmem", "\"4096 131072  6291456\"");
    let nodes = nodes(&cx, &role, &[]).unwrap();
    let r = check(&cx, &nodes);
    assert_eq!(r.pending, 2);
    assert_eq!(r.states[0].target, "net.ipv4.ip_forward");
    assert_eq!(r.states[0].changes.len(), 1);
    assert_eq!(
        r.states[0].changes[0].summary,
        "create /etc/sysctl.d/60-bootstrap-net.ipv4.ip_forward.conf (file only: the live value is not set under --root)"
    );
    assert_eq!(apply(&cx, &nodes).changed, 2);
    let path = root.path().join("etc/sysctl.d/60-bootstrap-net.ipv4.ip_forward.conf");
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "# managed by bootstrap (state `fwd`); local changes are overwritten\nnet.ipv4.ip_forward = 1\n"
    );
    assert_eq!(mode(&path), 0o644);
    let rmem = fs::read_to_string(root.path().join("etc/sysctl.d/60-bootstrap-net.ipv4.tcp_rmem.conf")).unwrap();
    assert!(rmem.ends_with("net.ipv4.tcp_rmem = 4096 131072  6291456\n"), "{rmem}");
    assert_eq!(check(&cx, &nodes).pending, 0);

    fs::write(&path, "net.ipv4.ip_forward = 0\n").unwrap();
    let r = check(&cx, &nodes);
    let diff = r.states[0].changes[0].diff.as_deref().unwrap();
    assert!(diff.contains("-net.ipv4.ip_forward = 0") && diff.contains("+net.ipv4.ip_forward = 1"), "{diff}");
    assert_eq!(apply(&cx, &nodes).changed, 1);
    assert_eq!(apply(&cx, &nodes).changed, 0);
}

#[test]
fn sysctl_live_values_are_read_from_proc_and_compared_loosely() {
    // Root `/`, planning only: nothing here writes. Keys every Linux kernel has.
    let cx = cx(Path::new("/"));
    let own_file = Path::new("/etc/sysctl.d/60-bootstrap-kernel.ostype.conf");
    assert!(!own_file.exists(), "{} exists on this machine", own_file.display());
    let rmem = fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem").unwrap();
    assert!(rmem.contains('\t'), "the kernel separates with tabs: {rmem:?}");
    let spaced = rmem.trim().replace('\t', "   ");
    let role = sysctl("ostype", "kernel.ostype", "\"Linux\"")
        + &sysctl("other", "kernel.osrelease", "\"0.0.1-plan9\"")
        + &sysctl("rmem", "net.ipv4.tcp_rmem", &format!("\"{spaced}\""))
        + &sysctl("typo", "net.ipv4.ip_forwarding", "1");
    let nodes = nodes(&cx, &role, &[]).unwrap();
    let plans: Vec<_> = nodes.iter().map(|n| n.state.plan(&cx)).collect();
    let summaries =
        |i: usize| -> Vec<String> { plans[i].as_ref().unwrap().changes.iter().map(|c| c.summary.clone()).collect() };
    // The live value matches: only the persisted file is missing.
    assert_eq!(summaries(0), ["create /etc/sysctl.d/60-bootstrap-kernel.ostype.conf"]);
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(summaries(1)[1], format!("set live value {} -> 0.0.1-plan9", release.trim()));
    assert_eq!(summaries(2).len(), 1, "tabs vs spaces is no change: {:?}", summaries(2));
    let e = format!("{:#}", plans[3].as_ref().err().unwrap());
    assert_eq!(
        e,
        "unknown sysctl key `net.ipv4.ip_forwarding`: there is no /proc/sys/net/ipv4/ip_forwarding (misspelt, or its kernel module is not loaded)"
    );
}

#[test]
fn bad_sysctl_parameters() {
    let cases = [
        (sysctl("s", "net/ipv4/ip_forward", "1"), "`name` `net/ipv4/ip_forward` is not a sysctl key"),
        (sysctl("s", "net..ip_forward", "1"), "is not a sysctl key"),
        (sysctl("s", "net.ipv4.ip forward", "1"), "is not a sysctl key"),
        (sysctl("s", "vm.swappiness", "true"), "`value` must be a string or an integer, not boolean"),
        (sysctl("s", "vm.swappiness", "\"  \""), "`value` must be one non-empty line"),
        (sysctl("s", "vm.swappiness", "\"1\\n2\""), "one non-empty line"),
        (sysctl("s", "vm.swappiness", "10") + &sysctl("t", "vm.swappiness", "20"), "state `t` (sysctl) manages path /etc/sysctl.d/60-bootstrap-vm.swappiness.conf and sysctl vm.swappiness, which state `s` (sysctl)"),
    ];
    for (role, want) in cases {
        let e = compile_err(&role);
        assert!(e.contains(want), "{role}\n=> {e}");
    }
}
