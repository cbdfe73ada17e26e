//! `firewall` on a real Debian node, probed from another container on the lab bridge: only
//! SSH, 80 and 443 answer, 5432 only from the one allowed address, a listening 8080 is
//! blocked; an operator's own table survives every run; a flushed table is listed by
//! `--check` and healed by one run; settings that would close SSH are refused and change
//! nothing; a run killed between loading a table and confirming it is undone by the
//! rollback timer; after a reboot the boot unit has loaded the table again.

use std::time::{Duration, Instant};

use vm_tests::cmd::wait_for;
use vm_tests::operator::{run_test_role as bt, INSTALLED as BIN, TEST_ROLES as ROLES};
use vm_tests::report::{
    self, apply_test_role as apply, assert_test_role_converged as converged, RunReport, StateReport, Status,
};
use vm_tests::{bootstrap_bin, timed, Lab, Node, RunOpts};

/// The one address allowed to reach PostgreSQL: a second address on the probe.
const DB_CLIENT: &str = "198.18.0.200";

const ROLE: &str = r#"
description = "issue 5 lab role: the firewall"

[settings.admin_networks]
type = "cidr"
list = true
default = ["198.18.0.0/24"]
prompt = "Networks SSH is allowed from"

[settings.firewall_extra]
list = true
default = []
prompt = "Extra firewall rules"

[[state]]
id = "firewall"
type = "firewall"
allow = [{ port = 80 }, { port = 443, proto = "tcp" }, { port = 5432, from = ["198.18.0.200/32"] }]
extra = { setting = "firewall_extra" }
ssh_from = { setting = "admin_networks" }
rollback_seconds = 15
"#;

/// In PATH before the real nft: after the run loads its new table, it hangs (while
/// /run/bt-hold exists) instead of returning, so the test can kill the run right there.
const HOLD_WRAPPER: &str = "#!/bin/sh\n\
if [ \"$1 $2\" = \"-f /var/lib/bootstrap/firewall-next.nft\" ] && [ -e /run/bt-hold ]; then\n\
  /usr/sbin/nft \"$@\" || exit $?\n\
  touch /run/bt-applied\n\
  exec sleep 600\n\
fi\n\
exec /usr/sbin/nft \"$@\"\n";

fn install(node: &Node, packages: &str) {
    node.run_opts(
        &["sh", "-c", &format!("apt-get update -q && apt-get install -y -q --no-install-recommends {packages}")],
        &RunOpts::default().env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .assert_ok("apt-get install");
}

fn listen(node: &Node, port: u16) {
    let unit = format!("--unit=bt-listen-{port}");
    node.exec(&["systemd-run", &unit, "--collect", "--quiet", "nc", "-lk", "-p", &port.to_string()])
        .assert_ok("start a listener");
}

/// Whether a TCP connection from `probe` (optionally from source address `from`) reaches `port`.
fn open(probe: &Node, target: &Node, port: u16, from: Option<&str>) -> bool {
    let (addr, port) = (target.addr().to_string(), port.to_string());
    let mut argv = vec!["nc", "-z", "-w", "2"];
    if let Some(src) = from {
        argv.extend(["-s", src]);
    }
    argv.extend([addr.as_str(), port.as_str()]);
    probe.exec(&argv).success()
}

/// The ports of `ports` that answer from the probe's main address.
fn answering(probe: &Node, target: &Node, ports: &[u16]) -> Vec<u16> {
    ports.iter().copied().filter(|p| open(probe, target, *p, None)).collect()
}

fn firewall(r: &RunReport) -> &StateReport {
    report::state(r, "firewall")
}

fn table(node: &Node, name: &str) -> String {
    node.exec(&["nft", "list", "table", "inet", name]).assert_ok("nft list table").stdout
}

#[test]
fn firewall_filters_heals_refuses_lockout_rolls_back_and_survives_reboot() {
    let total = Instant::now();
    let lab = timed("lab ready", || Lab::new("firewall"));
    let mut node = timed("boot node", || lab.boot("fw1"));
    let probe = timed("boot probe", || lab.boot("probe"));
    timed("apt-get install (offline)", || {
        install(&node, "nftables openssh-server netcat-openbsd");
        install(&probe, "netcat-openbsd");
    });
    probe.exec(&["ip", "addr", "add", &format!("{DB_CLIENT}/24"), "dev", "host0"]).assert_ok("second address");
    node.put_file(BIN, &std::fs::read(bootstrap_bin()).unwrap(), 0o755);
    node.put_file(&format!("{ROLES}/test.toml"), ROLE.as_bytes(), 0o644);
    for port in [80, 443, 5432, 8080] {
        listen(&node, port);
    }
    // The operator's own table, with a base chain on the same hook.
    node.sh(
        "nft add table inet operator && nft add chain inet operator x '{ type filter hook input priority 10; policy accept; }' \
         && nft add rule inet operator x tcp dport 9 accept",
    )
    .assert_ok("operator table");
    let operator = table(&node, "operator");
    let all = [22, 80, 443, 5432, 8080];
    assert_eq!(answering(&probe, &node, &all), all, "before the firewall, every listener answers");

    // A dry run lists the table to create and loads nothing.
    let r = bt(&node, &["--check", "--json"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let plan = report::parse(&r);
    assert_eq!(firewall(&plan).status, Status::Pending);
    assert_eq!(firewall(&plan).changes[0].summary, "create table inet bootstrap (10 rules, input policy drop)");
    assert!(!node.exec(&["nft", "list", "table", "inet", "bootstrap"]).success());

    // Converge, then probe from the other container.
    let r = timed("first apply", || apply(&node));
    assert_eq!(firewall(&r).status, Status::Changed, "{r:?}");
    assert_eq!(answering(&probe, &node, &all), [22, 80, 443], "only SSH, 80 and 443 from elsewhere");
    assert!(open(&probe, &node, 5432, Some(DB_CLIENT)), "5432 from the allowed address");
    assert!(!open(&probe, &node, 8080, Some(DB_CLIENT)), "8080 is blocked from that address too");
    assert_eq!(table(&node, "operator"), operator, "the operator's table is untouched");
    assert_eq!(node.exec(&["systemctl", "is-enabled", "bootstrap-firewall.service"]).stdout.trim(), "enabled");
    assert!(node.read_file("/etc/bootstrap/firewall.nft").contains("tcp dport 5432 accept"));

    // Idempotent, and what a no-op costs.
    let r = apply(&node);
    assert_eq!(r.changed, 0, "{r:?}");
    converged(&node);
    let noop = node.exec(&[
        "sh",
        "-c",
        &format!(
            "s=$(date +%s%N); {BIN} --roles {ROLES} apply test >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000 ))"
        ),
    ]);
    let noop_us: u64 = noop.stdout.trim().parse().unwrap_or_else(|_| panic!("{noop:?}"));
    let plan_ms = (0..5).map(|_| firewall(&apply(&node)).duration_ms).fold(f64::MAX, f64::min);
    eprintln!(
        "[timing] no-op: firewall plan (one `nft -j list`) {plan_ms} ms (best of 5); whole `bootstrap apply` of the role {:.1} ms wall",
        noop_us as f64 / 1000.0
    );

    // Drift: a flushed table is named by --check (exit 2) and healed by one run.
    let converged_table = table(&node, "bootstrap");
    node.exec(&["nft", "flush", "table", "inet", "bootstrap"]).assert_ok("flush");
    let r = bt(&node, &["--check"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(
        said.contains("firewall") && said.contains("replace table inet bootstrap: 10 rule(s) missing from input"),
        "{said}"
    );
    let r = timed("heal the flushed table", || apply(&node));
    assert_eq!(firewall(&r).status, Status::Changed);
    assert_eq!(table(&node, "bootstrap"), converged_table);
    assert_eq!(apply(&node).changed, 0);
    converged(&node);
    assert_eq!(answering(&probe, &node, &all), [22, 80, 443]);
    assert_eq!(table(&node, "operator"), operator);

    // Settings that would close SSH are refused before anything changes.
    node.put_file("/root/closed.toml", b"admin_networks = []\n", 0o644);
    let r = bt(&node, &["--site", "/root/closed.toml", "apply"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(said.contains("would not let SSH in on tcp/22") && said.contains("`ssh_from` is empty"), "{said}");
    assert_eq!(table(&node, "bootstrap"), converged_table, "refused: the table is unchanged");
    assert!(open(&probe, &node, 22, None));

    // The lockout guard. First a table with 8080 open (a site setting) ...
    node.put_file("/etc/bootstrap/site.toml", b"firewall_extra = [\"tcp/8080 from 198.18.0.0/24\"]\n", 0o644);
    assert_eq!(firewall(&apply(&node)).status, Status::Changed);
    assert_eq!(answering(&probe, &node, &[8080]), [8080]);
    // ... then a run that closes it again dies after loading, before confirming.
    node.put_file("/usr/local/sbin/nft", HOLD_WRAPPER.as_bytes(), 0o755);
    node.put_file("/etc/bootstrap/site.toml", b"firewall_extra = []\n", 0o644);
    node.exec(&["touch", "/run/bt-hold"]).assert_ok("hold");
    node.exec(&["systemd-run", "--unit=bt-killed", "--collect", "--quiet", BIN, "--roles", ROLES, "apply", "test"])
        .assert_ok("start the run to kill");
    wait_for("the run to load its table", Duration::from_secs(60), || node.exists("/run/bt-applied").then_some(()));
    assert_eq!(answering(&probe, &node, &[8080]), Vec::<u16>::new(), "the new table is live");
    let armed = node.exec(&["systemctl", "is-active", "bootstrap-firewall-rollback.timer"]);
    assert_eq!(armed.stdout.trim(), "active", "the rollback timer is armed");
    node.exec(&["systemctl", "kill", "--signal=SIGKILL", "bt-killed.service"]).assert_ok("kill -9 the run");
    let killed = Instant::now();
    wait_for("the rollback to restore the old table", Duration::from_secs(45), || {
        node.exec(&["/usr/sbin/nft", "list", "table", "inet", "bootstrap"])
            .stdout
            .contains("tcp dport 8080")
            .then_some(())
    });
    eprintln!(
        "[timing] rollback fired {:.1}s after the run was killed (armed for 15 s)",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(answering(&probe, &node, &[22, 8080]), [22, 8080], "the old table is back");
    assert!(node.journal(&["-u", "bootstrap-firewall-rollback.service"]).contains("restore the firewall table"));
    // The next run converges to what the settings say.
    node.exec(&["rm", "/usr/local/sbin/nft", "/run/bt-hold", "/run/bt-applied"]).assert_ok("unhold");
    let r = bt(&node, &["--check"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(firewall(&apply(&node)).status, Status::Changed);
    assert_eq!(table(&node, "bootstrap"), converged_table);
    assert_eq!(answering(&probe, &node, &[22, 8080]), [22]);
    converged(&node);

    // After a reboot the boot unit has loaded the same table; nothing to do.
    timed("reboot", || node.reboot());
    assert_eq!(table(&node, "bootstrap"), converged_table);
    assert_eq!(node.exec(&["systemctl", "is-active", "bootstrap-firewall.service"]).stdout.trim(), "active");
    converged(&node);
    listen(&node, 8080);
    assert_eq!(answering(&probe, &node, &[22, 8080]), [22]);

    drop(probe);
    drop(node);
    drop(lab);
    eprintln!("[timing] firewall total: {:.1}s", total.elapsed().as_secs_f64());
}
