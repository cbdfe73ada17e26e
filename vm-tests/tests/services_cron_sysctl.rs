//! `service`, `cron` and `sysctl` on a real Debian node (systemd as PID 1, real cron, its own
//! network namespace for net.* sysctls): converge, prove idempotence, heal drift listed by
//! `--check` beforehand, restart a service exactly once for a config change, carry out a
//! notification left pending by a run killed with SIGKILL, see cron really run the entry, and
//! come back converged after a reboot.

use std::time::{Duration, Instant};

use vm_tests::cmd::{poll, wait_for};
use vm_tests::operator::{run_test_role as bt, INSTALLED as BIN, TEST_ROLES as ROLES};
use vm_tests::report::{self, apply_test_role as apply, assert_test_role_converged as converged, summaries, Status};
use vm_tests::{bootstrap_bin, timed, Lab, Node, RunOpts};

const CRON_DEFAULTS: &str = "# managed by bootstrap (lab test)\nEXTRA_OPTS=\"-L 15\"\n";
const MARKER: &str = "/var/tmp/bt-cron-marker";

/// `slow`'s validator sleeps while /run/bt-slow exists: the window in which a run is killed
/// after the config change (and its queued notification) but before the notifications run.
const ROLE: &str = r##"
description = "issue 3 lab role: a config file that notifies its service, the service, a cron entry, sysctls"

[[state]]
id = "cron-defaults"
type = "file"
path = "/etc/default/cron"
content = "# managed by bootstrap (lab test)\nEXTRA_OPTS=\"-L 15\"\n"
notify = ["reload cron"]

[[state]]
id = "slow"
type = "file"
path = "/var/lib/bt-test/slow"
content = "x\n"
requires = ["cron-defaults"]
validate = ["sh", "-c", "if [ -e /run/bt-slow ]; then touch /run/bt-validating; sleep 300; fi", "validator"]

[[state]]
id = "cron-running"
type = "service"
name = "cron"
enabled = true
running = true
requires = ["cron-defaults"]

[[state]]
id = "marker-job"
type = "cron"
name = "bt-marker"
schedule = "* * * * *"
command = "date +%s > /var/tmp/bt-cron-marker"
env = { MAILTO = "" }

[[state]]
id = "somaxconn"
type = "sysctl"
name = "net.core.somaxconn"
value = 1024

[[state]]
id = "forwarding"
type = "sysctl"
name = "net.ipv4.ip_forward"
value = "1"
"##;

fn show(node: &Node, prop: &str) -> String {
    node.exec(&["systemctl", "show", "--value", "-p", prop, "cron"]).assert_ok(prop).stdout.trim().to_string()
}

/// How often cron.service was started in this boot, according to the journal.
fn cron_starts(node: &Node) -> usize {
    node.journal(&["-b", "-u", "cron.service"]).lines().filter(|l| l.starts_with("Started cron.service")).count()
}

/// Waits briefly for the journal to show `n` starts, then insists on exactly `n`.
fn assert_starts(node: &Node, n: usize, what: &str) {
    poll(Duration::from_secs(5), || (cron_starts(node) >= n).then_some(()));
    assert_eq!(cron_starts(node), n, "cron starts after {what}");
}

fn cron_args(node: &Node) -> String {
    node.exec(&["ps", "-o", "args=", "-C", "cron"]).stdout
}

fn sysctl_live(node: &Node, path: &str) -> String {
    node.read_file(path).trim().to_string()
}

#[test]
fn services_cron_and_sysctl_converge_heal_and_survive() {
    let total = Instant::now();
    let lab = timed("lab ready", || Lab::new("services_cron_sysctl"));
    let mut node = timed("boot", || lab.boot("svc1"));
    timed("apt-get install cron (offline)", || {
        node.run_opts(
            &["sh", "-c", "apt-get update -q && apt-get install -y -q --no-install-recommends cron"],
            &RunOpts::default().env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .assert_ok("apt-get install cron");
    });
    // The package enables and starts cron; undo that so the first run has service work to do.
    node.exec(&["systemctl", "disable", "--now", "cron"]).assert_ok("disable cron");
    node.put_file(BIN, &std::fs::read(bootstrap_bin()).unwrap(), 0o755);
    node.put_file(&format!("{ROLES}/test.toml"), ROLE.as_bytes(), 0o644);
    assert_ne!(sysctl_live(&node, "/proc/sys/net/core/somaxconn"), "1024");

    // A dry run lists everything and changes nothing.
    let r = bt(&node, &["--check", "--json"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let plan = report::parse(&r);
    let all = ["cron-defaults", "slow", "cron-running", "marker-job", "somaxconn", "forwarding"];
    assert_eq!(plan.ids_with(Status::Pending), all);
    assert_eq!(summaries(&plan, "cron-running"), ["enable (is disabled)", "start (is inactive/dead)"]);
    assert_eq!(plan.notifications[0].notification, "reload cron");
    assert!(!node.exists("/etc/cron.d/bt-marker"));
    assert_eq!(node.exec(&["systemctl", "is-active", "cron"]).stdout.trim(), "inactive");

    // Converge.
    let r = timed("first apply", || apply(&node));
    let first_converge = Instant::now();
    assert_eq!(r.ids_with(Status::Changed), all);
    assert_eq!(r.notifications[0].status, Status::Changed, "{:?}", r.notifications);
    assert_eq!(show(&node, "UnitFileState"), "enabled");
    assert_eq!(show(&node, "ActiveState"), "active");
    assert!(cron_args(&node).contains("-L 15"), "cron runs with the new defaults: {}", cron_args(&node));
    let entry = node.read_file("/etc/cron.d/bt-marker");
    assert!(entry.ends_with("MAILTO=\"\"\n* * * * * root date +\\%s > /var/tmp/bt-cron-marker\n"), "{entry}");
    assert_eq!(node.exec(&["stat", "-c", "%a %U", "/etc/cron.d/bt-marker"]).stdout.trim(), "644 root");
    assert_eq!(sysctl_live(&node, "/proc/sys/net/core/somaxconn"), "1024");
    assert_eq!(sysctl_live(&node, "/proc/sys/net/ipv4/ip_forward"), "1");
    assert!(node
        .read_file("/etc/sysctl.d/60-bootstrap-net.core.somaxconn.conf")
        .ends_with("net.core.somaxconn = 1024\n"));

    // Idempotent: nothing changes, nothing is restarted, --check agrees.
    let starts = cron_starts(&node);
    let r = apply(&node);
    assert_eq!(r.changed, 0, "{r:?}");
    assert!(r.notifications.is_empty(), "{:?}", r.notifications);
    let ms = |id: &str| report::state(&r, id).duration_ms;
    eprintln!(
        "[timing] no-op engine run: {} ms; of which the service plan (one look at every unit): {} ms, each sysctl: {} ms",
        r.duration_ms,
        ms("cron-running"),
        ms("forwarding")
    );
    converged(&node);
    assert_starts(&node, starts, "a no-op run");
    // The no-op cost as the schedule sees it: the whole process, inside the node.
    let noop = node.exec(&[
        "sh",
        "-c",
        &format!(
            "s=$(date +%s%N); {BIN} --roles {ROLES} apply test >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000 ))"
        ),
    ]);
    let noop_us: u64 = noop.stdout.trim().parse().unwrap_or_else(|_| panic!("{noop:?}"));
    eprintln!("[timing] no-op apply of the lab role (6 states, 1 service): {:.1} ms wall", noop_us as f64 / 1000.0);

    // Drift of every kind at once: listed by --check, healed by one run.
    node.sh("systemctl disable --now cron && echo 'EXTRA_OPTS=\"-L 0\"' >> /etc/default/cron \
         && rm /etc/cron.d/bt-marker && echo 0 > /proc/sys/net/ipv4/ip_forward \
         && rm /etc/sysctl.d/60-bootstrap-net.core.somaxconn.conf")
        .assert_ok("drift");
    let r = bt(&node, &["--check", "--json"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let plan = report::parse(&r);
    let drifted = ["cron-defaults", "cron-running", "marker-job", "somaxconn", "forwarding"];
    assert_eq!(plan.ids_with(Status::Pending), drifted);
    assert_eq!(summaries(&plan, "cron-running"), ["enable (is disabled)", "start (is inactive/dead)"]);
    assert_eq!(summaries(&plan, "forwarding"), ["set live value 0 -> 1"]);
    assert_eq!(summaries(&plan, "marker-job"), ["create /etc/cron.d/bt-marker"]);
    let r = timed("heal all drift", || apply(&node));
    assert_eq!(r.ids_with(Status::Changed), drifted);
    assert_eq!((show(&node, "UnitFileState"), show(&node, "ActiveState")), ("enabled".into(), "active".into()));
    assert!(cron_args(&node).contains("-L 15"));
    assert_eq!(sysctl_live(&node, "/proc/sys/net/ipv4/ip_forward"), "1");
    assert!(node.exists("/etc/cron.d/bt-marker") && node.exists("/etc/sysctl.d/60-bootstrap-net.core.somaxconn.conf"));
    assert_eq!(apply(&node).changed, 0);

    // A config change alone restarts (cron has no reload) its running service exactly once.
    let (starts, pid) = (cron_starts(&node), show(&node, "MainPID"));
    node.sh("echo '# local edit' >> /etc/default/cron").assert_ok("edit config");
    let r = apply(&node);
    assert_eq!(r.ids_with(Status::Changed), ["cron-defaults"]);
    assert_eq!(r.notifications[0].notification, "reload cron");
    assert_starts(&node, starts + 1, "one config change");
    assert_ne!(show(&node, "MainPID"), pid);
    assert_eq!(apply(&node).changed, 0);
    assert_starts(&node, starts + 1, "the run after it");

    // Killed (SIGKILL) after the config change, before the notifications: the next run
    // reloads. The config state rewrites the file and queues the notification on disk; the
    // next state's validator then hangs until the whole run is killed.
    let starts = cron_starts(&node);
    node.sh("echo '# edit again' >> /etc/default/cron && rm /var/lib/bt-test/slow && touch /run/bt-slow")
        .assert_ok("prepare kill");
    node.exec(&["systemd-run", "--unit=bt-killed", "--collect", "--quiet", BIN, "--roles", ROLES, "apply", "test"])
        .assert_ok("start the run to kill");
    wait_for("the run to reach the slow validator", Duration::from_secs(60), || {
        node.exists("/run/bt-validating").then_some(())
    });
    let pending = node.read_file("/var/lib/bootstrap/pending-notifications.json");
    assert!(pending.contains("\"reload\"") && pending.contains("\"cron\""), "{pending}");
    assert_eq!(node.read_file("/etc/default/cron"), CRON_DEFAULTS, "the config was rewritten before the kill");
    node.exec(&["systemctl", "kill", "--signal=SIGKILL", "bt-killed.service"]).assert_ok("kill -9 the run");
    wait_for("the killed run to be gone", Duration::from_secs(10), || {
        (node.exec(&["systemctl", "is-active", "bt-killed.service"]).stdout.trim() != "active").then_some(())
    });
    node.exec(&["rm", "/run/bt-slow"]).assert_ok("rm /run/bt-slow");
    assert_starts(&node, starts, "the killed run");
    let r = bt(&node, &["--check", "--json"]);
    assert_eq!(r.code, 2);
    let plan = report::parse(&r);
    assert_eq!(plan.ids_with(Status::Pending), ["slow"]);
    assert_eq!(plan.notifications[0].notification, "reload cron");
    assert_eq!(plan.notifications[0].status, Status::Pending);
    let r = apply(&node);
    assert_eq!(r.ids_with(Status::Changed), ["slow"]);
    assert_eq!(r.notifications[0].status, Status::Changed);
    assert_starts(&node, starts + 1, "the run after the killed one");
    assert!(!node.exists("/var/lib/bootstrap/pending-notifications.json"));
    converged(&node);

    // cron really runs the entry, `%` and all (unescaped, cron would cut the command at it and
    // never write the file). Every-minute job: wait for the next minute boundary.
    let marker = timed("cron runs the entry", || loop {
        let out = node.exec(&["cat", MARKER]);
        if out.success() && !out.stdout.trim().is_empty() {
            break out.stdout;
        }
        assert!(first_converge.elapsed() < Duration::from_secs(150), "cron did not run the entry");
        std::thread::sleep(Duration::from_secs(1));
    });
    let when: u64 = marker.trim().parse().unwrap_or_else(|_| panic!("marker holds {marker:?}"));
    let now: u64 = node.exec(&["date", "+%s"]).stdout.trim().parse().unwrap();
    assert!(now - when < 180, "marker {when} vs now {now}");

    // After a reboot: enabled cron is back, systemd-sysctl applied the persisted values.
    timed("reboot", || node.reboot());
    converged(&node);
    assert_eq!(show(&node, "ActiveState"), "active");
    assert_eq!(sysctl_live(&node, "/proc/sys/net/core/somaxconn"), "1024");
    assert_eq!(sysctl_live(&node, "/proc/sys/net/ipv4/ip_forward"), "1");

    drop(node);
    drop(lab);
    eprintln!("[timing] services_cron_sysctl total: {:.1}s", total.elapsed().as_secs_f64());
}
