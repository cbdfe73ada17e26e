//! Faults injected into runs on one fresh node (issue 13): a validator that prints a secret in
//! several encodings (none reaches stdout, the journal or the report); a full disk (the old
//! file stays whole, no temp file left, the next run with room converges); 50 runs started at
//! once (one at a time, the others say the lock is held, the node ends converged); runs
//! SIGKILLed at many points (the next run converges; their validators die with them instead
//! of running on); sshd listening where an `Include` of another directory and `ssh.socket`
//! say, and where an sshd started by hand listens (the table opens every port; a vendor
//! drop-in hidden by one of the same name in /etc does not count); a table that would shut
//! out the SSH session running the install, or with a stale `SSH_CONNECTION` (tmux) any open
//! SSH connection, is refused and the live table stays as it was; a socket-activated sshd
//! (`ssh.socket`, its drop-in changed without a daemon-reload) is reachable through the table
//! on the port PID 1 listens on.
//!
//! And runs killed at chosen points of their own work (`kill_points`: strace kills the run at
//! its Nth rename, child process start or write): seven fresh nodes each killed once during
//! the first install of the app role, then a scheduled run healing drift (files deleted and
//! changed, the table gone, haproxy stopped, the secrets file opened) killed at every rename
//! and at spreads of its child starts and writes. After each kill: every file it writes is as
//! before or as the next run leaves it (or, in an install, as its package ships it), the live
//! table too; the report and the queue parse; nothing of the run still runs; the next run
//! converges (haproxy serving again), and a run after that changes nothing.

use std::time::{Duration, Instant};

use vm_tests::canary;
use vm_tests::cmd::{poll, wait_for};
use vm_tests::kill_points::{self, At, Calls};
use vm_tests::operator::{download, serve_binary, settled_state, INSTALLED as BIN, TEST_ROLES as ROLES};
use vm_tests::report::{self, Status};
use vm_tests::{bootstrap_bin, timed, Lab, Node, RunOpts, RunResult};

const CANARY: &str = "Canary/Secret+Value=0042!";

const LEAK: &str = r#"
description = "a validator that prints the secret it checks, in several encodings"

[[secret]]
name = "canary_token"
prompt = "canary"

[[state]]
id = "leaky"
type = "file"
path = "/etc/bt-faults/token.conf"
template = "token.hbs"
mode = "0600"
validate = ["sh", "-c", "v=$(sed -n 's/^token = //p' \"$1\"); echo \"plain $v\"; printf '%s' \"$v\" | base64; printf '%s' \"$v\" | od -An -tx1 | tr -d ' \\n'; echo; exit 1", "leak", "{}"]
"#;

fn disk_role(bytes: usize) -> String {
    format!(
        "description = \"a file on a small filesystem\"\n\n[[state]]\nid = \"data\"\ntype = \"file\"\npath = \"/srv/full/data.txt\"\ncontent = \"{}\"\n",
        "x".repeat(bytes)
    )
}

/// Six files, each validated slowly (a run takes a couple of seconds, so kills land inside
/// it), one whose validator hangs while /run/bt-hang exists, and one whose validator's child
/// hangs while /run/bt-hang-deep exists.
fn slow_role() -> String {
    let mut s = String::from("description = \"slow writes\"\n");
    for i in 0..6 {
        s += &format!(
            "\n[[state]]\nid = \"slow-{i}\"\ntype = \"file\"\npath = \"/var/lib/bt-faults/slow-{i}\"\ncontent = \"{i}\\n\"\n\
             validate = [\"sh\", \"-c\", \"sleep 0.3\", \"slow\"]\n"
        );
    }
    s += "\n[[state]]\nid = \"hang\"\ntype = \"file\"\npath = \"/var/lib/bt-faults/hang\"\ncontent = \"h\\n\"\n\
          validate = [\"sh\", \"-c\", \"if [ -e /run/bt-hang ]; then exec sleep 300; fi\", \"hang\"]\n";
    // A shell that does not `exec`: its `sleep` is the run's grandchild, out of reach of the
    // parent-death signal.
    s += "\n[[state]]\nid = \"hang-deep\"\ntype = \"file\"\npath = \"/var/lib/bt-faults/hang-deep\"\ncontent = \"h\\n\"\n\
          validate = [\"sh\", \"-c\", \"if [ -e /run/bt-hang-deep ]; then sleep 301; fi; true\", \"hang\"]\n";
    s
}

const FW: &str = r#"
description = "the firewall alone"

[[state]]
id = "fw"
type = "firewall"
"#;

const FW_ONE_HOST: &str = r#"
description = "the firewall, SSH from one address only"

[[state]]
id = "fw"
type = "firewall"
ssh_from = ["198.18.0.99/32"]
"#;

const FW_V4: &str = r#"
description = "the firewall, SSH from an IPv4 network only"

[[state]]
id = "fw"
type = "firewall"
ssh_from = ["198.18.0.0/24"]
"#;

fn bt(node: &Node, role: &str, args: &[&str]) -> RunResult {
    let mut argv = vec![BIN, "--roles", ROLES];
    argv.extend_from_slice(args);
    argv.push(role);
    node.run(&argv)
}

#[test]
fn faults_leave_no_secret_no_half_file_and_a_converging_node() {
    let lab = timed("lab ready", || Lab::new("faults"));
    let node = timed("boot", || lab.boot("faults1"));
    node.put_file(BIN, &std::fs::read(bootstrap_bin()).unwrap(), 0o755);
    node.put_file("/etc/bootstrap/secrets.toml", format!("canary_token = \"{CANARY}\"\n").as_bytes(), 0o600);
    node.put_file(&format!("{ROLES}/leak.toml"), LEAK.as_bytes(), 0o644);
    node.put_file(&format!("{ROLES}/templates/token.hbs"), b"token = {{secret \"canary_token\"}}\n", 0o644);
    node.put_file(&format!("{ROLES}/slow.toml"), slow_role().as_bytes(), 0o644);
    node.put_file(&format!("{ROLES}/fw.toml"), FW.as_bytes(), 0o644);
    node.put_file(&format!("{ROLES}/fwv4.toml"), FW_V4.as_bytes(), 0o644);
    node.put_file(&format!("{ROLES}/fwhost.toml"), FW_ONE_HOST.as_bytes(), 0o644);

    // A validator printing the secret, plain, base64 and hex: refused, and none of it shown.
    let r = bt(&node, "leak", &["apply", "--json"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("rejected by `sh`"), "the failure is not named: {}", r.stdout);
    let report = node.read_file("/var/lib/bootstrap/last-run.json");
    let journal = node.journal(&["-o", "cat"]);
    canary::assert_absent(
        CANARY,
        &[("stdout", &r.stdout), ("stderr", &r.stderr), ("last-run.json", &report), ("journal", &journal)],
    );
    assert!(!node.exists("/etc/bt-faults/token.conf"), "a refused file went live");

    // A full disk: the write fails, the old file stays whole, no temp file is left.
    node.sh("mkdir -p /srv/full && mount -t tmpfs -o size=16k tmpfs /srv/full").assert_ok("a 16 KiB filesystem");
    node.put_file(&format!("{ROLES}/disk.toml"), disk_role(1000).as_bytes(), 0o644);
    assert_eq!(bt(&node, "disk", &["apply"]).code, 0);
    node.put_file(&format!("{ROLES}/disk.toml"), disk_role(64_000).as_bytes(), 0o644);
    let r = bt(&node, "disk", &["apply"]);
    assert_eq!(r.code, 1, "a write to a full disk succeeded:\n{}\n{}", r.stdout, r.stderr);
    assert!(format!("{}{}", r.stdout, r.stderr).contains("No space left"), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(node.read_file("/srv/full/data.txt"), "x".repeat(1000), "the old file was damaged");
    let left = node.run(&["ls", "-A", "/srv/full"]).stdout;
    assert_eq!(left.trim(), "data.txt", "temp files left on the full disk: {left}");
    node.put_file(&format!("{ROLES}/disk.toml"), disk_role(2000).as_bytes(), 0o644);
    assert_eq!(bt(&node, "disk", &["apply"]).code, 0);
    assert_eq!(bt(&node, "disk", &["--check"]).code, 0);

    // 50 runs at once: one at a time, the others say so (75) and change nothing.
    let t = Instant::now();
    let script = format!(
        "for i in $(seq 50); do ({BIN} --roles {ROLES} apply slow >/dev/null 2>/run/bt-err.$i; echo $? > /run/bt-rc.$i) & done; wait; cat /run/bt-rc.*"
    );
    let rcs = node.run_opts(&["sh", "-c", &script], &RunOpts::default().timeout(Duration::from_secs(300))).stdout;
    eprintln!("[measure] 50 concurrent runs done in {:.1}s", t.elapsed().as_secs_f64());
    let codes: Vec<&str> = rcs.split_whitespace().collect();
    assert_eq!(codes.len(), 50, "{rcs}");
    assert!(codes.iter().all(|c| *c == "0" || *c == "75"), "a concurrent run failed: {codes:?}");
    assert!(codes.contains(&"0"), "no run got the lock: {codes:?}");
    let busy = node.run(&["sh", "-c", "grep -l 'holds /run/bootstrap.lock' /run/bt-err.* | wc -l"]).stdout;
    assert_eq!(busy.trim(), codes.iter().filter(|c| **c == "75").count().to_string(), "busy runs must say why");
    assert_eq!(bt(&node, "slow", &["--check"]).code, 0, "not converged after the concurrent runs");

    // Killed with SIGKILL at many points (the main process only, as `kill -9` from a shell
    // does), each on a fresh start of the role: after each, every file there is whole, no validator of
    // the killed run runs on, and the next run converges and sweeps the temp files.
    let mut points = Vec::new();
    for i in 0..12u64 {
        node.run(&["rm", "-rf", "/var/lib/bt-faults"]).assert_ok("rm");
        let unit = format!("bt-kill-{i}");
        start_slow_run(&node, &unit);
        let at = 150 + i * 170;
        std::thread::sleep(Duration::from_millis(at));
        let _ = node.exec(&["systemctl", "kill", "--kill-whom=main", "--signal=SIGKILL", &unit]);
        wait_for("the killed run to end", Duration::from_secs(10), || {
            (node.exec(&["systemctl", "is-active", &unit]).stdout.trim() != "active").then_some(())
        });
        let written = node.sh("cd /var/lib/bt-faults 2>/dev/null && ls -A | wc -l").stdout.trim().to_string();
        points.push(format!("{at} ms: {written} files"));
        for n in 0..6 {
            let f = format!("/var/lib/bt-faults/slow-{n}");
            if node.exists(&f) {
                assert_eq!(node.read_file(&f), format!("{n}\n"), "{f} half-written by the run killed at {at} ms");
            }
        }
        let orphan =
            poll(Duration::from_secs(3), || (!node.exec(&["pgrep", "-f", "sleep 0.3"]).success()).then_some(()));
        assert!(orphan.is_some(), "a validator of the run killed at {at} ms runs on");
        let r = apply_retrying(&node, "slow");
        assert_eq!(r.code, 0, "the run after the kill at {at} ms failed:\n{}\n{}", r.stdout, r.stderr);
        // A temp file the kill caught (one being validated) is swept by the run that writes its file.
        let tmp = node
            .run(&["sh", "-c", "find /var/lib/bt-faults /var/lib/bootstrap -name '*bootstrap-tmp*' | wc -l"])
            .stdout;
        assert_eq!(tmp.trim(), "0", "temp files of the run killed at {at} ms outlived the next run");
    }
    eprintln!("[measure] 12 SIGKILLs, each followed by a converging run: {}", points.join(", "));
    assert_eq!(bt(&node, "slow", &["--check"]).code, 0);

    // A validator that hangs: the run killed under it takes it along.
    node.sh("rm -f /var/lib/bt-faults/hang && touch /run/bt-hang").assert_ok("arm the hang");
    kill_slow_run_once(&node, "bt-hang-run", "sleep 300");
    let gone = poll(Duration::from_secs(5), || (!node.exec(&["pgrep", "-f", "sleep 300"]).success()).then_some(()));
    assert!(
        gone.is_some(),
        "the validator of a killed run runs on: {}",
        node.exec(&["ps", "-eo", "pid,ppid,args"]).stdout
    );
    node.run(&["rm", "-f", "/run/bt-hang"]).assert_ok("disarm");
    assert_eq!(apply_retrying(&node, "slow").code, 0);

    // A validator's own child that hangs: the parent-death signal ends the shell, not its
    // `sleep`, so the next run waits for what the killed run left going, then kills it.
    node.sh("rm -f /var/lib/bt-faults/hang-deep && touch /run/bt-hang-deep").assert_ok("arm the deep hang");
    kill_slow_run_once(&node, "bt-hang-deep-run", "^sleep 301");
    let shell =
        poll(Duration::from_secs(5), || (!node.exec(&["pgrep", "-f", "bt-hang-deep ]"]).success()).then_some(()));
    assert!(shell.is_some(), "the validator's shell outlived the run");
    assert!(
        node.exec(&["pgrep", "-f", "^sleep 301"]).success(),
        "the grandchild did not outlive the run: nothing left to test"
    );
    node.run(&["rm", "-f", "/run/bt-hang-deep"]).assert_ok("disarm");
    let t = Instant::now();
    let r = apply_retrying(&node, "slow");
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    eprintln!(
        "[measure] the next run waited for the killed run's grandchild, then killed it: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert!(
        !node.exec(&["pgrep", "-f", "^sleep 301"]).success(),
        "the killed run's grandchild still runs after the next run"
    );
    assert!(
        format!("{}{}", r.stderr, node.journal(&["-o", "cat", "-t", "bootstrap"]))
            .contains("outlived a killed run and still ran after 60s: killed"),
        "the next run did not say it waited for the grandchild, then killed it"
    );
    assert_eq!(
        node.run(&["ls", "-A", "/run/bootstrap/children"]).stdout,
        "",
        "records of children outlived their runs"
    );

    // sshd on a port from an Include of another directory, and a socket unit on another: the
    // firewall opens both, and 22.
    node.sh("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables openssh-server >/dev/null")
        .assert_ok("nftables, openssh-server");
    node.put_file("/etc/ssh/sshd_config.d/00-site.conf", b"Include /etc/ssh/site.d/*.conf\n", 0o644);
    node.put_file("/etc/ssh/site.d/port.conf", b"Port 22\nPort 2222\n", 0o644);
    node.put_file("/etc/systemd/system/ssh.socket.d/port.conf", b"[Socket]\nListenStream=\nListenStream=2223\n", 0o644);
    // A vendor drop-in of the same name is hidden by the one in /etc, as systemd reads them.
    node.put_file("/usr/lib/systemd/system/ssh.socket.d/port.conf", b"[Socket]\nListenStream=2224\n", 0o644);
    node.sh("systemctl daemon-reload && systemctl restart ssh").assert_ok("sshd on 22 and 2222");
    // An sshd started by hand on a port no configuration names: open too.
    node.exec(&["systemd-run", "--unit=sshd-by-hand", "/usr/sbin/sshd", "-D", "-p", "2299"]).assert_ok("sshd -p 2299");
    wait_for("sshd on 2299", Duration::from_secs(10), || {
        node.exec(&["ss", "-Hltn", "sport = :2299"]).stdout.contains("2299").then_some(())
    });
    let r = bt(&node, "fw", &["apply"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let table = node.run(&["nft", "list", "table", "inet", "bootstrap"]).stdout;
    for port in ["22", "2222", "2223", "2299"] {
        assert!(table.contains(&format!("tcp dport {port} accept comment \"ssh\"")), "tcp/{port} not open:\n{table}");
    }
    assert!(!table.contains("2224"), "the hidden vendor drop-in's port was opened:\n{table}");
    assert_eq!(bt(&node, "fw", &["--check"]).code, 0);

    // A stale SSH_CONNECTION (tmux started over an earlier connection from .99) while the
    // operator is connected from the lab host: the live connection is kept too, so a table
    // admitting only .99 is refused, naming the live client.
    let live = lab.in_netns(|| std::net::TcpStream::connect((node.addr(), 22)).expect("connect to sshd"));
    let stale = RunOpts::default().env("SSH_CONNECTION", "198.18.0.99 40000 198.18.0.10 22");
    let r = node.run_opts(&[BIN, "--roles", ROLES, "apply", "fwhost"], &stale);
    let said = format!("{}{}", r.stdout, r.stderr);
    assert_eq!(r.code, 1, "{said}");
    assert!(said.contains("would shut out an open SSH session") && said.contains("from 198.18.0.1 "), "{said}");
    assert_eq!(node.run(&["nft", "list", "table", "inet", "bootstrap"]).stdout, table, "the table changed");
    drop(live);

    // Run from an SSH session over IPv6 with `ssh_from` naming IPv4 only: refused, the live
    // table as it was.
    let session = RunOpts::default().env("SSH_CONNECTION", "2001:db8::5 40000 2001:db8::10 22");
    let r = node.run_opts(&[BIN, "--roles", ROLES, "apply", "fwv4"], &session);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(said.contains("would shut out this SSH session, from 2001:db8::5") && said.contains("IPv6"), "{said}");
    assert_eq!(node.run(&["nft", "list", "table", "inet", "bootstrap"]).stdout, table, "the table changed");

    // sshd behind ssh.socket (socket activation: PID 1 holds the listener, no sshd runs until
    // a connection comes), and its drop-in edited without a daemon-reload: the files say 2225
    // while PID 1 still listens on 2223. Both are opened, and sshd answers on 2223 from the
    // lab host through the table.
    node.sh("systemctl stop sshd-by-hand; systemctl disable --now ssh.service && systemctl enable --now ssh.socket")
        .assert_ok("ssh.socket");
    wait_for("ssh.socket on 2223", Duration::from_secs(10), || {
        node.exec(&["ss", "-Hltn", "sport = :2223"]).stdout.contains("2223").then_some(())
    });
    node.put_file("/etc/systemd/system/ssh.socket.d/port.conf", b"[Socket]\nListenStream=\nListenStream=2225\n", 0o644);
    let r = bt(&node, "fw", &["apply"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let table = node.run(&["nft", "list", "table", "inet", "bootstrap"]).stdout;
    for port in ["2223", "2225"] {
        assert!(table.contains(&format!("tcp dport {port} accept comment \"ssh\"")), "tcp/{port} not open:\n{table}");
    }
    let banner = lab.in_netns(|| {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect_timeout(&(node.addr(), 2223).into(), Duration::from_secs(3))
            .expect("the socket-activated sshd is shut out");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).to_string()
    });
    assert!(banner.starts_with("SSH-2.0"), "no sshd banner through the table on 2223: {banner:?}");
    assert_eq!(bt(&node, "fw", &["--check"]).code, 0);
}

/// Starts `apply slow` as unit `unit` whose SIGKILL reaches the main process only, as
/// `kill -9` from a shell does.
fn start_slow_run(node: &Node, unit: &str) {
    let unit = format!("--unit={unit}");
    node.exec(&[
        "systemd-run",
        &unit,
        "--collect",
        "--quiet",
        "-p",
        "KillMode=process",
        BIN,
        "--roles",
        ROLES,
        "apply",
        "slow",
    ])
    .assert_ok("start a run to kill");
}

/// Starts `apply slow` as unit `unit` and kills its main process (`kill -9`) once a process
/// matching `hung` (`pgrep -f`) runs.
fn kill_slow_run_once(node: &Node, unit: &str, hung: &str) {
    start_slow_run(node, unit);
    wait_for(&format!("`{hung}` to hang"), Duration::from_secs(30), || {
        node.exec(&["pgrep", "-f", hung]).success().then_some(())
    });
    node.exec(&["systemctl", "kill", "--kill-whom=main", "--signal=SIGKILL", unit]).assert_ok("kill -9 the run");
}

/// `apply` of `role`, retried while a scheduled run holds the lock.
fn apply_retrying(node: &Node, role: &str) -> RunResult {
    retrying(|| bt(node, role, &["apply"]))
}

/// `run`, retried while a scheduled run holds the lock.
fn retrying(run: impl Fn() -> RunResult) -> RunResult {
    let t = Instant::now();
    loop {
        let r = run();
        if r.code != 75 || t.elapsed() > Duration::from_secs(120) {
            return r;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The app role's site for the kill points: a database pool, so the node holds a secret.
const KILL_SITE: &str = "db_hosts = [\"198.18.0.50:5432\"]\n";
const KILL_PASSWORD: &str = "Kill/Point+Canary=0042";
const INSTALL: &[&str] = &["/root/bootstrap", "--site", "/root/site.toml", "app"];
const SCHEDULED: &[&str] = &[BIN, "apply"];

/// What a run writes: each must be, after a kill, either as it was before the run or as the
/// next converging run leaves it, never anything else (half-written, truncated, mixed).
const WRITTEN: &[&str] = &[
    "/etc/haproxy/haproxy.cfg",
    "/etc/haproxy/certs/site.pem",
    "/var/www/bootstrap/index.html",
    "/etc/bootstrap/app/database.env",
    "/etc/bootstrap/secrets.toml",
    "/etc/bootstrap/site.toml",
    "/etc/bootstrap/node.toml",
    "/etc/bootstrap/firewall.nft",
    "/etc/cron.d/bootstrap",
    "/etc/motd",
    BIN,
];
/// Written whole or not at all, and read back by the next run: must parse.
const JSON_WRITTEN: &[&str] = &["/var/lib/bootstrap/last-run.json", "/var/lib/bootstrap/pending-notifications.json"];

/// Each written file's sha256, mode, owner and group (or "absent"), and the live table's
/// sha256; a copy of each is kept under `/run/bt-snap/TAG` to show what differs.
fn snapshot(node: &Node, tag: &str) -> Vec<(String, String)> {
    let script = format!(
        "rm -rf /run/bt-snap/{tag}; mkdir -p /run/bt-snap/{tag}; for f in {}; do if [ -e \"$f\" ]; then \
         echo $(sha256sum < \"$f\" | cut -c1-16) $(stat -c %a:%U:%G \"$f\"); cp --parents \"$f\" /run/bt-snap/{tag}/; \
         else echo absent; fi; done; \
         nft list table inet bootstrap 2>/dev/null | sha256sum | cut -c1-16",
        WRITTEN.join(" ")
    );
    let out = node.exec(&["sh", "-c", &script]).stdout;
    let names = WRITTEN.iter().copied().chain([TABLE]);
    names.zip(out.lines()).map(|(n, h)| (n.to_string(), h.to_string())).collect()
}

const TABLE: &str = "the live table inet bootstrap";

/// After a run killed at `at`: every written file as before (`pre`), as after (`post`) or, in a
/// first install, as its package ships it (haproxy's own haproxy.cfg), never anything else;
/// what differs is shown.
fn assert_whole(
    node: &Node,
    at: &str,
    before: &[(String, String)],
    killed: &[(String, String)],
    after: &[(String, String)],
    first_install: bool,
) {
    for ((name, b), ((_, k), (_, a))) in before.iter().zip(killed.iter().zip(after)) {
        if k != b && k != a && !(first_install && as_packaged(node, name)) {
            let diff = match name.as_str() {
                TABLE => String::new(),
                f => node.exec(&["diff", "-u", &format!("/run/bt-snap/mid{f}"), f]).stdout,
            };
            panic!("{name} after the kill at {at} is neither as before ({b}) nor as converged ({a}): {k}\n{diff}");
        }
    }
}

/// Is the copy of `file` taken after the kill the package's own conffile, unchanged?
fn as_packaged(node: &Node, file: &str) -> bool {
    let script = format!(
        "dpkg-query -W -f='${{Conffiles}}\\n' | awk '$1 == \"{file}\" {{ print $2 }}' | grep -qx \"$(md5sum < /run/bt-snap/mid{file} | cut -d' ' -f1)\""
    );
    file.starts_with('/') && node.exec(&["sh", "-c", &script]).success()
}

fn assert_json_parses(node: &Node, at: &str) {
    for f in JSON_WRITTEN {
        if node.exists(f) {
            let text = node.read_file(f);
            assert!(
                serde_json::from_str::<serde_json::Value>(&text).is_ok(),
                "{f} after the kill at {at} is not JSON: {text}"
            );
        }
    }
}

fn assert_no_leftovers(node: &Node, killed: &kill_points::Killed, at: &str, grace: Duration) {
    let left = kill_points::leftovers(node, killed, grace);
    assert!(left.is_empty(), "the run killed at {at} left processes running: {left:?}");
}

/// Kill points spread over `1..=count`: at most `n` of them, the first and last included.
fn spread(count: u32, n: u32) -> Vec<u32> {
    let n = n.min(count);
    let mut v: Vec<u32> = (0..n).map(|i| 1 + i * (count - 1) / (n - 1).max(1)).collect();
    v.dedup();
    v
}

#[test]
fn runs_killed_at_chosen_points_of_an_install_and_a_scheduled_run_converge() {
    let lab = timed("lab ready", || Lab::new("kill_points"));
    let http = lab.http_server(0);
    serve_binary(&http);
    let secret =
        RunOpts::default().env("BOOTSTRAP_SECRET_DB_PASSWORD", KILL_PASSWORD).timeout(Duration::from_secs(300));
    let prepare = |node: &Node| {
        download(node, &http);
        node.put_file("/root/site.toml", KILL_SITE.as_bytes(), 0o644);
        node.sh("apt-get update -qq && apt-get install -y -qq strace >/dev/null").assert_ok("strace");
    };

    // A first install traced to its end: how many renames and child processes it makes.
    let reference = lab.boot("kref");
    prepare(&reference);
    let (calls, code) = kill_points::count(&reference, INSTALL, &secret);
    assert_eq!(code, 0, "the traced first install failed");
    eprintln!("[measure] a first install of the app role, calls on its main thread: {calls:?}");
    let Calls { renames, clones, .. } = calls;
    assert!(renames >= 8 && clones >= 8, "too few calls to aim at: {calls:?}");

    // Fresh nodes, each killed once during its first install, side by side; then the operator
    // runs the same command again, which converges.
    let mut points: Vec<At> = [1, renames / 3, 2 * renames / 3, renames - 1].map(At::Rename).to_vec();
    // Clones vary more between runs than renames (plans made ahead take turns on the main
    // thread): aim at the first half.
    points.extend([clones / 6, clones / 3, clones / 2].map(At::Clone));
    let nodes: Vec<Node> = (0..points.len()).map(|i| lab.boot(&format!("kill{i}"))).collect();
    let landed: Vec<(bool, String)> = std::thread::scope(|s| {
        let runs: Vec<_> = nodes
            .iter()
            .zip(&points)
            .map(|(node, &at)| {
                let secret = &secret;
                let prepare = &prepare;
                s.spawn(move || {
                    prepare(node);
                    let before = snapshot(node, "pre");
                    let killed = kill_points::run_killed(node, "bt-install", INSTALL, at, secret);
                    let mid = snapshot(node, "mid");
                    assert_json_parses(node, &at.to_string());
                    // dpkg under a killed apt-get may finish its step first.
                    assert_no_leftovers(node, &killed, &at.to_string(), Duration::from_secs(120));
                    let again = node.run_opts(INSTALL, secret);
                    assert_eq!(
                        again.code, 0,
                        "the install after the kill at {at} failed:\n{}\n{}",
                        again.stdout, again.stderr
                    );
                    assert_whole(node, &at.to_string(), &before, &mid, &snapshot(node, "post"), true);
                    let r = report::apply(node);
                    assert_eq!(
                        r.changed,
                        0,
                        "a second run after the kill at {at} changed: {:?}",
                        r.ids_with(Status::Changed)
                    );
                    assert_eq!(node.run(&[BIN, "--check"]).code, 0, "--check after the kill at {at}");
                    (killed.killed, format!("{at}: {}", killed.landed))
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    eprintln!("[measure] first installs killed, each converged by the operator's next run:");
    for (killed, l) in &landed {
        eprintln!("[measure]   {l}{}", if *killed { "" } else { " (not killed: the run made fewer calls)" });
    }
    // Counts of calls vary a little between runs (plans made ahead take turns on the main thread).
    assert!(landed.iter().filter(|(k, _)| !k).count() <= 1, "too many installs ended before their kill point");

    // A scheduled run with work to do (files deleted and changed, the table gone, haproxy
    // stopped, the secrets file opened to all), killed at every rename and at a spread of
    // its child processes, each followed by the schedule's next run.
    let node = &reference;
    let drift = "rm -f /etc/haproxy/haproxy.cfg /etc/haproxy/certs/site.pem /var/www/bootstrap/index.html /etc/cron.d/bootstrap; \
                 echo drift >> /etc/motd; echo '# drift' >> /etc/bootstrap/app/database.env; chmod 0644 /etc/bootstrap/secrets.toml; \
                 nft delete table inet bootstrap; systemctl stop haproxy; \
                 systemctl reset-failed cron haproxy"; // restarted every few seconds here: past systemd's start limit
    node.sh(drift).assert_ok("drift");
    let (calls, code) = kill_points::count(node, SCHEDULED, &RunOpts::default());
    assert_eq!(code, 0, "the traced scheduled run failed");
    eprintln!("[measure] a scheduled run healing that drift, calls on its main thread: {calls:?}");
    let Calls { renames, clones, writes } = calls;
    let mut points: Vec<At> = spread(renames, renames).into_iter().map(At::Rename).collect();
    points.extend(spread(clones * 3 / 4, 12).into_iter().map(At::Clone));
    points.extend(spread(writes * 3 / 4, 12).into_iter().map(At::Write));
    let (mut killed_at, mut ran_out) = (Vec::new(), Vec::new());
    for at in &points {
        let at_s = at.to_string();
        node.sh(drift).assert_ok("drift");
        let before = snapshot(node, "pre");
        let killed = kill_points::run_killed(node, "bt-scheduled", SCHEDULED, *at, &RunOpts::default());
        let mid = snapshot(node, "mid");
        assert_json_parses(node, &at_s);
        assert_no_leftovers(node, &killed, &at_s, Duration::from_secs(10));
        let r = retrying(|| node.run(SCHEDULED));
        assert_eq!(r.code, 0, "the run after the kill at {at} failed:\n{}\n{}", r.stdout, r.stderr);
        assert_whole(node, &at_s, &before, &mid, &snapshot(node, "post"), false);
        assert_eq!(settled_state(node, "haproxy"), "active", "haproxy after the kill at {at} and one run");
        if killed.killed {
            killed_at.push(format!("{at}: {}", killed.landed));
        } else {
            ran_out.push(at_s);
        }
    }
    eprintln!("[measure] {} scheduled runs killed, each converged by the next run:", killed_at.len());
    for l in &killed_at {
        eprintln!("[measure]   {l}");
    }
    // Counts of calls vary a little between runs (plans made ahead take turns on the main thread).
    assert!(ran_out.len() <= 3, "too many runs ended before their kill point: {ran_out:?}");
    let r = report::apply(node);
    assert_eq!(r.changed, 0, "a run after the last kill changed: {:?}", r.ids_with(Status::Changed));
    assert_eq!(node.run(&[BIN, "--check"]).code, 0);
    let everywhere = format!(
        "{}{}",
        node.journal(&["-o", "cat"]),
        node.sh("cat /var/lib/bootstrap/last-run.json /etc/motd /etc/haproxy/haproxy.cfg").stdout
    );
    canary::assert_absent(KILL_PASSWORD, &[("the journal, the report or a public file", &everywhere)]);
}
