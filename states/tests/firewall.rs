//! `firewall`: rendered rulesets checked by the real `nft -c -f` over a range of inputs; bad
//! input refused with clear errors; files under `--root`; and, in a child process with its own
//! network and mount namespaces (a throwaway `/etc` and `/var/lib`, so root `/` is safe), the
//! live state against the real kernel: create, converge, drift of every kind healed,
//! handles ignored, other tables untouched, a failed confirm rolled back, the no-op cost.
//! systemd (`systemctl`, `systemd-run`) is faked and recorded: there is none on this host.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use states::engine::report::Status;
use states::engine::runner::{Cmd, Output, Runner, SystemRunner};
use states::kinds::firewall::guard;
use states::kinds::firewall::rules::{parse_extra, spec, table, Entry, What};
use states::kinds::firewall::{observe, BOOT_FILE, ENABLE_LINK, UNIT_FILE};
use states::sys::nft::{self, Table, RESET};
use states::Context;
use support::*;

fn sh(script: &str) -> Output {
    SystemRunner.run(&Cmd::new("sh").args(["-c", script])).unwrap()
}

fn sh_ok(script: &str) -> String {
    let out = sh(script);
    assert!(out.success(), "`{script}` failed: {}", out.message());
    out.stdout
}

fn table_for(params: &str, ports: &[u16]) -> Table {
    table(&spec(toml::from_str(params).unwrap()).unwrap(), ports).unwrap()
}

/// `nft -c -f` on `script`: the kernel's own parser and validator, nothing loaded.
fn nft_check(script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.nft");
    fs::write(&f, script).unwrap();
    let out = SystemRunner.run(&Cmd::new("nft").args(["-c", "-f"]).arg(f.to_string_lossy())).unwrap();
    assert!(out.success(), "nft -c rejects:\n{script}\n{}", out.message());
}

/// `n` extra rules of every shape: ports and ranges, tcp and udp, v4, v6 and mixed sources.
fn extras(n: usize) -> String {
    let rules: Vec<String> = (0..n)
        .map(|i| match i % 5 {
            0 => format!("\"tcp/{}\"", 1000 + i),
            1 => format!("\"udp/{}-{} from 10.{}.0.0/16\"", 2000 + i, 2010 + i, i % 250),
            2 => format!("\"tcp/{} from 2001:db8:{:x}::/48, 198.18.{}.0/24\"", 3000 + i, i, i % 250),
            3 => format!("\"{} from fd00:{:x}::1 192.0.2.{}\"", 4000 + i, i, i % 250),
            _ => format!("\"tcp/{} from 10.0.0.0/8,10.1.0.0/16 2001:db8::/32\"", 5000 + i),
        })
        .collect();
    format!("extra = [{}]", rules.join(", "))
}

const APP_DB: &str = r#"allow = [ { port = 80 }, { port = 443, proto = "tcp" }, { port = 5432, from = ["198.18.0.0/24", "fd00:18::/64"] } ]"#;

#[test]
fn rendered_rulesets_pass_the_real_nft_check() {
    let ports: &[&[u16]] = &[&[22], &[2222], &[1, 65535], &[22, 2200, 60022]];
    let t = Instant::now();
    let mut checked = 0;
    for n in [0, 1, 5, 100] {
        for p in ports {
            let tab = table_for(&format!("{APP_DB}\n{}", extras(n)), p);
            let script = tab.script();
            for port in *p {
                assert!(script.contains(&format!("tcp dport {port} accept comment \"ssh\"")), "{script}");
                assert!(tab.admits_new_tcp(*port));
            }
            nft_check(&script);
            checked += 1;
        }
    }
    // IPv6-only SSH, mixed-family sources, a restricted SSH on an odd port.
    for params in [
        "ssh_from = [\"2001:db8::/32\"]",
        "ssh_from = [\"10.0.0.0/8\", \"2001:db8::1\"]\nallow = [{ port = \"60000-61000\", proto = \"udp\", from = \"fe80::/10\" }]",
        "ssh_from = [\"192.0.2.7\"]\nextra = [\"udp/51820 from ::/0\"]",
        "extra = [\"vrrp from 198.18.0.0/24, fd00::/8\", \"vrrp\"]",
    ] {
        let script = table_for(params, &[4422]).script();
        nft_check(&script);
        checked += 1;
    }
    eprintln!("{checked} rulesets rendered and checked by nft -c in {:?}", t.elapsed());

    // What the file looks like: the one transaction that replaces only our table.
    let script = table_for(APP_DB, &[22]).script();
    assert!(script.starts_with(RESET), "{script}");
    for line in [
        "type filter hook input priority 0; policy drop;",
        "ct state established,related accept",
        "iifname \"lo\" accept",
        "tcp dport 443 accept comment \"allow[1] tcp/443\"",
        "ip saddr 198.18.0.0/24 tcp dport 5432 accept comment \"allow[2] tcp/5432\"",
        "ip6 saddr fd00:18::/64 tcp dport 5432 accept",
        "nd-neighbor-solicit",
        "packet-too-big",
    ] {
        assert!(script.contains(line), "missing `{line}` in:\n{script}");
    }
    assert!(!script.contains("hook forward") && !script.contains("hook output"), "{script}");
}

fn compile_err(params: &str) -> String {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let role = format!("[[state]]\nid = \"fw\"\ntype = \"firewall\"\n{params}\n");
    let err = nodes(&cx, &role, &[]).err().unwrap_or_else(|| panic!("accepted: {params}"));
    format!("{err:#}")
}

#[test]
fn bad_input_is_refused_clearly_before_anything_runs() {
    for (params, want) in [
        ("ssh_from = []", "would not let SSH in on tcp/22 (sshd's configured port) (`ssh_from` is empty)"),
        ("extra = [\"tcp/80800\"]", "port `80800` is not a number in 1-65535"),
        ("extra = [\"icmp/8\"]", "unknown protocol `icmp`"),
        ("extra = [\"tcp/80 from\"]", "`from` needs at least one CIDR"),
        ("extra = [\"tcp/80 from 10.0.0.300/8\"]", "`10.0.0.300/8` is not an IPv4/IPv6 address or CIDR"),
        ("extra = [\"tcp/80 to 10.0.0.0/8\"]", "unexpected `to`"),
        ("extra = [\"tcp/90-80\"]", "backwards"),
        ("allow = [{ port = 0 }]", "`allow[0]`: `port` 0 is not in 1-65535"),
        ("allow = [{ port = 25, proto = \"sctp\" }]", "`proto` must be `tcp` or `udp`"),
        ("allow = [{ port = 25, from = [] }]", "`from` is empty"),
        ("allow = [{ port = 25, form = \"10.0.0.0/8\" }]", "unknown field `form`"),
        ("alow = []", "unknown field `alow`"),
        ("ssh_from = [\"example.org\"]", "`ssh_from`"),
        ("rollback_seconds = 1", "`rollback_seconds` must be 10-3600"),
    ] {
        let err = compile_err(params);
        assert!(err.contains(want), "{params}: expected `{want}` in: {err}");
    }
    // Every `extra` error names the entry and shows the grammar.
    let err = compile_err("extra = [\"tcp/22\", \"tcp/x\"]");
    assert!(err.contains("`extra[1]` = \"tcp/x\"") && err.contains("e.g. `tcp/8080 from 10.0.0.0/8`"), "{err}");
}

#[test]
fn a_table_that_would_shut_out_the_ssh_session_of_the_run_is_refused() {
    use states::engine::facts::SshSession;
    use states::kinds::firewall::rules::keeps_session;
    let check_in = |site: &str, session: &str, ports: &[u16], own: bool| {
        let spec = spec(toml::from_str(site).unwrap()).unwrap();
        let t = table(&spec, ports).unwrap();
        keeps_session(&spec, &t, &SshSession::parse(session).unwrap(), own, ports).map_err(|e| format!("{e:#}"))
    };
    let check =
        |from: &str, session: &str, ports: &[u16]| check_in(&format!("ssh_from = {from}"), session, ports, true);
    // Over IPv6 with only IPv4 networks: refused, naming the family.
    let err = check("[\"198.18.0.0/24\"]", "2001:db8::5 50122 2001:db8::10 22", &[22]).unwrap_err();
    assert!(
        err.contains("would shut out this SSH session, from 2001:db8::5 on tcp/22")
            && err.contains("it names no IPv6 network, so SSH over IPv6 would be shut out")
            && err.contains("nothing was changed"),
        "{err}"
    );
    // From an IPv4 address outside the networks (shown mapped by a dual-stack sshd).
    let err =
        check("[\"198.18.0.0/24\", \"2001:db8::/32\"]", "::ffff:203.0.113.7 50122 198.18.0.10 22", &[22]).unwrap_err();
    assert!(err.contains("from 203.0.113.7 on tcp/22") && !err.contains("names no"), "{err}");
    // In on a port sshd's configuration does not name (an -p override): the table would not
    // let it in again.
    let err = check("[\"198.18.0.0/24\"]", "198.18.0.99 50122 198.18.0.10 2200", &[22]).unwrap_err();
    assert!(err.contains("came in on tcp/2200, which sshd's configuration does not name"), "{err}");
    // Another open session, kept because this run's variable is stale: said so.
    let err = check_in("ssh_from = [\"198.18.0.0/24\"]", "203.0.113.8 50122 198.18.0.10 22", &[22], false).unwrap_err();
    assert!(err.contains("would shut out an open SSH session (this run's SSH_CONNECTION is stale"), "{err}");
    // Admitted by another rule (the storage role's SFTP from the private network): kept.
    let site = "ssh_from = [\"203.0.113.0/24\"]\nextra = [\"tcp/22 from 198.18.0.0/24\"]";
    check_in(site, "198.18.0.60 50122 198.18.0.10 22", &[22], false).unwrap();
    check_in(site, "198.18.1.60 50122 198.18.0.10 22", &[22], false).unwrap_err();
    // Inside them, or from loopback: accepted.
    check("[\"198.18.0.0/24\"]", "198.18.0.99 50122 198.18.0.10 22", &[22]).unwrap();
    check("[\"198.18.0.0/24\"]", "127.0.0.1 50122 127.0.0.1 22", &[22]).unwrap();
    assert!(SshSession::parse("garbage").is_none());
}

#[test]
fn the_extra_grammar() {
    let ports = |e: &Entry| match e.what {
        What::Ports(p, r) => (p.name(), r),
        What::Protocol(p) => (p, (0, 0)),
    };
    let e = parse_extra("  udp/500-510   from 10.1.2.3/8,2001:DB8::1 ").unwrap();
    assert_eq!(ports(&e), ("udp", (500, 510)));
    let from: Vec<String> = e.from.unwrap().iter().map(ToString::to_string).collect();
    assert_eq!(from, ["10.0.0.0/8", "2001:db8::1/128"]);
    let e = parse_extra("8443").unwrap();
    assert_eq!((ports(&e), e.from.is_none()), (("tcp", (8443, 8443)), true));
    // VRRP (keepalived) has no ports; a port on it is an error.
    let e = parse_extra("vrrp from 198.18.0.0/24").unwrap();
    assert!(matches!(e.what, What::Protocol("vrrp")) && e.label == "vrrp", "{e:?}");
    assert!(parse_extra("vrrp/112").unwrap_err().to_string().contains("unknown protocol `vrrp`"));
    // (A role drops list items that render empty; the grammar refuses them all the same.)
    assert!(parse_extra(" ").unwrap_err().to_string().starts_with("empty rule; expected"));
}

#[test]
fn under_root_it_writes_the_boot_files_only() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("etc/ssh/sshd_config.d")).unwrap();
    fs::write(root.path().join("etc/ssh/sshd_config"), "Include /etc/ssh/sshd_config.d/*.conf\n").unwrap();
    fs::write(root.path().join("etc/ssh/sshd_config.d/port.conf"), "Port 2222\n").unwrap();
    let cx = cx(root.path());
    let role = format!("[[state]]\nid = \"fw\"\ntype = \"firewall\"\n{APP_DB}\n");
    let nodes = nodes(&cx, &role, &[]).unwrap();
    let r = check(&cx, &nodes);
    assert_eq!(r.pending, 1, "{:?}", r.states[0].error);
    let changes = &r.states[0].changes;
    assert_eq!(
        changes.len(),
        3,
        "boot file, unit, enable link: {:?}",
        changes.iter().map(|c| &c.summary).collect::<Vec<_>>()
    );
    assert!(changes.iter().all(|c| c.summary.ends_with("(under --root: files only, the live table is not loaded)")));
    let diff = changes[0].diff.as_deref().unwrap();
    assert!(diff.contains("+\t\ttcp dport 2222 accept comment \"ssh\""), "{diff}");

    let r = apply(&cx, &nodes);
    assert_eq!((r.changed, r.failed), (1, 0), "{:?}", r.states[0].error);
    let boot = fs::read_to_string(root.path().join(BOOT_FILE.trim_start_matches('/'))).unwrap();
    nft_check(&boot);
    let unit = fs::read_to_string(root.path().join(UNIT_FILE.trim_start_matches('/'))).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/sbin/nft -f /etc/bootstrap/firewall.nft")
            && unit.contains("After=nftables.service")
    );
    let link = fs::read_link(root.path().join(ENABLE_LINK.trim_start_matches('/'))).unwrap();
    assert_eq!(link, Path::new(UNIT_FILE));
    assert_eq!(check(&cx, &nodes).pending, 0);
}

// ---------------------------------------------------------------------------------------------
// Live, in private namespaces

/// Runs test `name` again in a child process with new mount and network namespaces, where
/// `/etc` is a copy and `/tmp`, `/var/lib` and the packages' unit files (an `ssh.socket` would
/// add its port) are empty tmpfs: the state can act on root `/` and
/// the real kernel, and everything it did vanishes with the child. True in the child.
fn isolated(name: &str) -> bool {
    if std::env::var_os("BT_FIREWALL_ISOLATED").is_some() {
        sh_ok(
            "set -e; mount -t tmpfs tmpfs /tmp; mkdir /tmp/etc; cp -a /etc/. /tmp/etc/; \
             mount --bind /tmp/etc /etc; mount -t tmpfs tmpfs /var/lib; ip link set lo up; \
             if [ -d /usr/lib/systemd/system ]; then mount -t tmpfs tmpfs /usr/lib/systemd/system; fi",
        );
        return true;
    }
    let out = Command::new("unshare")
        .args(["--mount", "--net", "--propagation", "private"])
        .arg(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("BT_FIREWALL_ISOLATED", "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{text}");
    assert!(out.status.success() && text.contains("1 passed"), "the isolated run failed");
    false
}

/// What happens right after our table is loaded, before the confirm.
type AfterLoad = Box<dyn FnOnce() + Send>;

/// Real `nft` (in the child's own network namespace) and `sshd -T`, fake systemd, every
/// command recorded.
#[derive(Clone, Default)]
struct LabRunner {
    log: Arc<Mutex<Vec<String>>>,
    /// Run once right after our table is loaded, before the confirm: what changes then.
    after_load: Arc<Mutex<Option<AfterLoad>>>,
    /// A rollback timer of an earlier, killed run is still armed.
    armed: Arc<AtomicBool>,
    /// What `systemctl show` says of ssh.socket; nothing (no such unit) by default.
    socket_show: Arc<Mutex<String>>,
    /// What `sshd -T` prints instead of asking the real one.
    sshd_t: Arc<Mutex<Option<String>>>,
}

impl Runner for LabRunner {
    fn run(&self, cmd: &Cmd) -> anyhow::Result<Output> {
        let line = cmd.display();
        self.log.lock().unwrap().push(line.clone());
        let ok = |code| Ok(Output { code: Some(code), stdout: String::new(), stderr: String::new() });
        let says = |stdout: String| Ok(Output { code: Some(0), stdout, stderr: String::new() });
        match cmd.program.as_str() {
            "systemctl" if cmd.args[0] == "is-active" => ok(if self.armed.load(Ordering::SeqCst) { 0 } else { 3 }),
            "systemctl" if cmd.args[0] == "show" => says(self.socket_show.lock().unwrap().clone()),
            "systemctl" | "systemd-run" => ok(0),
            "/usr/sbin/sshd" if self.sshd_t.lock().unwrap().is_some() => {
                says(self.sshd_t.lock().unwrap().clone().unwrap())
            }
            _ => {
                let out = SystemRunner.run(cmd)?;
                if line.starts_with("nft -f /var/lib/bootstrap/firewall-next.nft") {
                    if let Some(then) = self.after_load.lock().unwrap().take() {
                        then();
                    }
                }
                Ok(out)
            }
        }
    }
}

impl LabRunner {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

fn live_cx(runner: &LabRunner) -> Context {
    let mut cx = cx(Path::new("/"));
    cx.runner = Box::new(runner.clone());
    cx
}

fn live_table() -> Option<Table> {
    observe(&live_cx(&LabRunner::default())).unwrap()
}

fn summaries(r: &states::engine::report::RunReport) -> Vec<String> {
    r.states[0].changes.iter().map(|c| c.summary.clone()).collect()
}

#[test]
fn live_table_converges_heals_and_rolls_back() {
    if !isolated("live_table_converges_heals_and_rolls_back") {
        return;
    }
    fs::write("/etc/ssh/sshd_config", "Port 2222\n").unwrap();
    let _ = fs::remove_dir_all("/etc/ssh/sshd_config.d");
    let runner = LabRunner::default();
    let role = format!("[[state]]\nid = \"fw\"\ntype = \"firewall\"\n{APP_DB}\nextra = [\"udp/51820\", \"tcp/8080 from 10.0.0.0/8 2001:db8::/32\"]\n");
    let cx = live_cx(&runner);
    let nodes = nodes(&cx, &role, &[]).unwrap();
    // The operator's own table, which must survive every run.
    sh_ok("nft add table inet operator && nft add chain inet operator x '{ type filter hook input priority 10; }' && nft add rule inet operator x tcp dport 9 drop");
    let operator = sh_ok("nft -j list table inet operator | sed 's/\"handle\": [0-9]*//g'");

    // Dry run: the table is to be created; nothing is loaded.
    let r = check(&cx, &nodes);
    assert_eq!(r.pending, 1, "{:?}", r.states[0].error);
    assert_eq!(summaries(&r)[0], "create table inet bootstrap (14 rules, input policy drop)");
    assert!(r.states[0].changes[0].diff.as_deref().unwrap().contains("+\t\ttcp dport 2222 accept comment \"ssh\""));
    assert!(live_table().is_none());
    // A plan that changes something asks sshd and systemd (here: no ssh.socket) too.
    let log = runner.take();
    assert_eq!(log[0], "nft -j list table inet bootstrap", "{log:?}");
    assert!(log[1].starts_with("systemctl show ") && log[1].ends_with(" ssh.socket"), "{log:?}");
    assert_eq!(log[2..], ["/usr/sbin/sshd -T", "nft -c -f -"], "{log:?}");

    // Apply: guarded load, then the boot files; the engine's second plan finds nothing to do.
    let r = apply(&cx, &nodes);
    assert_eq!((r.changed, r.failed), (1, 0), "{:?}", r.states[0].error);
    let log = runner.take();
    let pos = |p: &str| log.iter().position(|l| l.starts_with(p)).unwrap_or_else(|| panic!("no `{p}` in {log:?}"));
    assert!(
        pos("systemd-run '--unit=bootstrap-firewall-rollback' '--on-active=90'")
            < pos("nft -f /var/lib/bootstrap/firewall-next.nft")
    );
    assert!(
        pos("nft -f /var/lib/bootstrap/firewall-next.nft") < pos("systemctl stop bootstrap-firewall-rollback.timer")
    );
    assert!(pos("systemctl stop bootstrap-firewall-rollback.timer") < pos("systemctl daemon-reload"));
    assert!(log.iter().any(|l| l.ends_with("/usr/sbin/nft -f /var/lib/bootstrap/firewall-previous.nft")), "{log:?}");
    // There was no table before: the rollback would remove ours again.
    assert_eq!(fs::read_to_string("/var/lib/bootstrap/firewall-previous.nft").unwrap(), RESET);
    assert!(!Path::new("/var/lib/bootstrap/firewall-next.nft").exists());
    let want = live_table().unwrap();
    assert!(want.admits_new_tcp(2222) && !want.admits_new_tcp(22));
    assert_eq!(fs::read_link(ENABLE_LINK).unwrap(), Path::new(UNIT_FILE));
    let boot = fs::read_to_string(BOOT_FILE).unwrap();

    // The no-op: one `nft -j list` and nothing else.
    let t = Instant::now();
    let r = check(&cx, &nodes);
    let took = t.elapsed();
    assert_eq!((r.unchanged, r.pending), (1, 0), "{:?}", summaries(&r));
    assert_eq!(runner.take(), ["nft -j list table inet bootstrap"]);
    eprintln!("[timing] no-op plan of the firewall (one nft -j list): {took:?}");

    // New handles (the boot file loaded by hand, as at boot) are no difference.
    sh_ok(&format!("nft -f {BOOT_FILE}"));
    assert_eq!(check(&cx, &nodes).pending, 0);
    // Nor is JSON with other key order and without handles.
    let json = SystemRunner.run(&Cmd::new("nft").args(["-j", "list", "table", "inet", "bootstrap"])).unwrap().stdout;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let resorted = v.to_string().replace("\"handle\":", "\"h\":");
    assert_ne!(resorted, json);
    assert_eq!(nft::decode(&resorted).unwrap(), want);

    // Drift of every kind: listed by a dry run, healed by one apply, then converged.
    for (drift, summary) in [
        ("nft flush table inet bootstrap", "replace table inet bootstrap: 14 rule(s) missing from input"),
        (
            "nft delete rule inet bootstrap input handle $(nft -a list chain inet bootstrap input | sed -n 's/.*udp dport 51820 .*# handle //p')",
            "replace table inet bootstrap: 1 rule(s) missing from input",
        ),
        ("nft add rule inet bootstrap input tcp dport 3306 accept", "replace table inet bootstrap: 1 unexpected rule(s) in input"),
        ("nft insert rule inet bootstrap input counter", "replace table inet bootstrap: 1 unexpected rule(s) in input"),
        ("nft 'chain inet bootstrap input { policy accept; }'", "replace table inet bootstrap: chain input: filter input priority 0 policy accept -> filter input priority 0 policy drop"),
        ("nft add set inet bootstrap blocked '{ type ipv4_addr; }'", "replace table inet bootstrap: unexpected set blocked"),
        ("nft add chain inet bootstrap forward '{ type filter hook forward priority 0; policy drop; }'", "replace table inet bootstrap: unexpected chain forward"),
        ("nft delete table inet bootstrap", "create table inet bootstrap (14 rules, input policy drop)"),
    ] {
        sh_ok(drift);
        let r = check(&cx, &nodes);
        assert_eq!((r.pending, summaries(&r).first().map(String::as_str)), (1, Some(summary)), "after `{drift}`");
        let r = apply(&cx, &nodes);
        assert_eq!((r.changed, r.failed), (1, 0), "after `{drift}`: {:?}", r.states[0].error);
        assert_eq!(live_table().as_ref(), Some(&want), "after `{drift}`");
        assert_eq!(check(&cx, &nodes).pending, 0);
    }
    // The previous table saved for the rollback is the drifted one (table deleted: none).
    assert_eq!(fs::read_to_string("/var/lib/bootstrap/firewall-previous.nft").unwrap(), RESET);
    assert_eq!(fs::read_to_string(BOOT_FILE).unwrap(), boot);
    let after = sh_ok("nft -j list table inet operator | sed 's/\"handle\": [0-9]*//g'");
    assert_eq!(after, operator, "the operator's table is untouched");

    // A confirm that fails (our table wiped right after the load): the previous table is
    // restored at once, the run fails, the boot file still holds the last confirmed table.
    fs::write("/etc/ssh/sshd_config", "Port 2222\nPort 2200\n").unwrap();
    let cx = live_cx(&runner);
    let nodes = support::nodes(&cx, &role, &[]).unwrap();
    *runner.after_load.lock().unwrap() = Some(Box::new(|| drop(sh_ok("nft flush table inet bootstrap"))));
    runner.take();
    let r = apply(&cx, &nodes);
    assert_eq!((r.failed, r.states[0].status), (1, Status::Failed));
    let err = r.states[0].error.clone().unwrap();
    assert!(err.contains("the previous table was restored: the table read back is not the one loaded"), "{err}");
    assert_eq!(live_table().as_ref(), Some(&want), "the previous table is back");
    assert_eq!(fs::read_to_string(BOOT_FILE).unwrap(), boot);
    let log = runner.take();
    assert!(log.iter().any(|l| l == "nft -f /var/lib/bootstrap/firewall-previous.nft"), "{log:?}");
    // The next run opens the new port.
    let r = apply(&cx, &nodes);
    assert_eq!((r.changed, r.failed), (1, 0), "{:?}", r.states[0].error);
    assert!(live_table().unwrap().admits_new_tcp(2200));

    // A load that nft itself rejects changes nothing either.
    let before = live_table();
    let err = guard::load(
        &cx,
        "table inet bootstrap { chain input { tcp dport 99999 accept; } }",
        Duration::from_secs(90),
        || Ok(()),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("the previous table was restored"), "{err:#}");
    assert_eq!(live_table(), before);

    // A timer still armed by a run that died unconfirmed: the table it saved (the last
    // confirmed one) is kept for the new timer, not replaced by the unconfirmed live one.
    fs::write("/var/lib/bootstrap/firewall-previous.nft", "# last confirmed\n").unwrap();
    runner.armed.store(true, Ordering::SeqCst);
    runner.take();
    guard::load(&cx, &want.script(), Duration::from_secs(90), || Ok(())).unwrap();
    runner.armed.store(false, Ordering::SeqCst);
    assert_eq!(fs::read_to_string("/var/lib/bootstrap/firewall-previous.nft").unwrap(), "# last confirmed\n");
    let log = runner.take();
    assert!(!log.iter().any(|l| l.starts_with("nft list")), "{log:?}");
    assert_eq!(log[1], "systemctl stop bootstrap-firewall-rollback.timer", "{log:?}");
    assert!(log[2].starts_with("systemd-run "), "{log:?}");

    // Every rendered table reads back as itself (the comparison by meaning, both ways).
    for n in [0, 1, 5, 100] {
        let tab = table_for(&format!("{APP_DB}\n{}", extras(n)), &[22, 2222]);
        let f = "/tmp/t.nft";
        fs::write(f, tab.script()).unwrap();
        sh_ok(&format!("nft -f {f}"));
        assert_eq!(live_table().as_ref(), Some(&tab), "{n} extra rules");
    }
}

#[test]
fn ssh_ports_come_from_every_included_file_and_the_socket_unit() {
    use states::sys::sshd_port::ports;
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let put = |path: &str, text: &str| {
        let p = root.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    assert_eq!(ports(&cx).unwrap(), [22], "no sshd configuration: 22");
    // A port in a file pulled in by an Include of another directory (relative to /etc/ssh),
    // nested, and one in sshd_config.d even without an Include naming it.
    put("/etc/ssh/sshd_config", "Include site/*.conf\nPort 2200\n");
    put("/etc/ssh/site/10-port.conf", "Port 2201\nInclude /etc/ssh/deeper.conf\n");
    put("/etc/ssh/deeper.conf", "ListenAddress 0.0.0.0:2202\nInclude /etc/ssh/sshd_config\n");
    put("/etc/ssh/sshd_config.d/x.conf", "Port 2203\n");
    put("/etc/ssh/site/ignored.conf.bak", "Port 9999\n");
    assert_eq!(ports(&cx).unwrap(), [2200, 2201, 2202, 2203]);
    // Socket activation: the unit's port, replaced by a drop-in's.
    put("/lib/systemd/system/ssh.socket", "[Socket]\nListenStream=22\nAccept=no\n");
    assert_eq!(ports(&cx).unwrap(), [22, 2200, 2201, 2202, 2203]);
    put("/etc/systemd/system/ssh.socket.d/port.conf", "[Socket]\nListenStream=\nListenStream=2222\n");
    assert_eq!(ports(&cx).unwrap(), [2200, 2201, 2202, 2203, 2222]);
}

/// The sshd a test started, killed when the test ends, passed or not.
#[derive(Default)]
struct Reap(Arc<Mutex<Option<std::process::Child>>>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn confirm_refuses_ssh_ports_the_loaded_table_does_not_open() {
    if !isolated("confirm_refuses_ssh_ports_the_loaded_table_does_not_open") {
        return;
    }
    fs::write("/etc/ssh/sshd_config", "Port 2222\n").unwrap();
    let _ = fs::remove_dir_all("/etc/ssh/sshd_config.d");
    let runner = LabRunner::default();
    let role = "[[state]]\nid = \"fw\"\ntype = \"firewall\"\n";
    let cx = live_cx(&runner);
    let r = apply(&cx, &nodes(&cx, role, &[]).unwrap());
    assert_eq!((r.changed, r.failed), (1, 0), "{:?}", r.states[0].error);
    let before = live_table().unwrap();
    // Each apply below has a port to open: sshd's configuration names 2200 now.
    fs::write("/etc/ssh/sshd_config", "Port 2222\nPort 2200\n").unwrap();
    let nodes = nodes(&cx, role, &[]).unwrap();
    let failed = |r: &states::engine::report::RunReport| {
        assert_eq!((r.failed, r.states[0].status), (1, Status::Failed));
        assert_eq!(live_table().as_ref(), Some(&before), "the previous table is back");
        r.states[0].error.clone().unwrap()
    };

    // sshd restarted onto a port the plan did not see, between the load and the confirm: a
    // real sshd, since the confirm finds sshd's listeners among the processes.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("host_key");
    sh_ok(&format!("ssh-keygen -q -t ed25519 -N '' -f {}", key.display()));
    let conf = dir.path().join("sshd_config");
    fs::write(&conf, format!("Port 2299\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\n", key.display())).unwrap();
    let sshd = Reap::default();
    let started = sshd.0.clone();
    *runner.after_load.lock().unwrap() = Some(Box::new(move || {
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        *started.lock().unwrap() = Some(child);
        let t = Instant::now();
        while std::net::TcpStream::connect("127.0.0.1:2299").is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "sshd does not listen on 2299");
            std::thread::sleep(Duration::from_millis(20));
        }
    }));
    let r = apply(&cx, &nodes);
    assert!(sshd.0.lock().unwrap().is_some(), "sshd was started");
    drop(sshd);
    let err = failed(&r);
    assert!(
        err.contains("the previous table was restored: sshd listens on tcp/2299, which the table loaded does not open"),
        "{err}"
    );

    // PID 1 came to listen elsewhere for ssh.socket (a daemon-reload) after the plan.
    let show = "LoadState=loaded\nActiveState=active\nListen=[::]:2298 (Stream)\nListen=/run/x.sock (Stream)\n";
    let socket = runner.socket_show.clone();
    *runner.after_load.lock().unwrap() = Some(Box::new(move || *socket.lock().unwrap() = show.to_string()));
    let err = failed(&apply(&cx, &nodes));
    assert!(err.contains("ssh.socket listens on tcp/2298, which the table loaded does not open"), "{err}");
    // Seen by the plan, it is opened; and the next plan, finding the files say less, asks
    // again rather than closing it (no flapping).
    let r = apply(&cx, &nodes);
    assert_eq!((r.changed, r.failed), (1, 0), "{:?}", r.states[0].error);
    assert!(live_table().unwrap().admits_new_tcp(2298) && live_table().unwrap().admits_new_tcp(2200));
    runner.take();
    assert_eq!(check(&cx, &nodes).pending, 0);
    let log = runner.take();
    assert!(log.len() == 3 && log[2] == "/usr/sbin/sshd -T", "{log:?}");
    runner.socket_show.lock().unwrap().clear();

    // No /run/sshd (sshd never started since boot): the plan may not make it, so it can't ask
    // `sshd -T`; apply makes it and asks, and refuses a port the plan did not open.
    sh_ok("mount -t tmpfs tmpfs /run");
    *runner.sshd_t.lock().unwrap() = Some("port 2222\nport 2200\nport 2297\nlistenaddress [::]:2297\n".into());
    let before = live_table();
    let r = apply(&cx, &nodes);
    let err = r.states[0].error.clone().unwrap();
    assert!(err.contains("sshd -T names tcp/2297, which the planned table does not open"), "{err}");
    assert_eq!(live_table(), before, "nothing was loaded");
    assert!(Path::new("/run/sshd").is_dir());
    // The next plan can ask.
    let r = apply(&cx, &nodes);
    assert_eq!((r.changed, r.failed), (1, 0), "{:?}", r.states[0].error);
    assert!(live_table().unwrap().admits_new_tcp(2297));
}
