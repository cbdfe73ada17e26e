//! Proves the lab library works end to end on this host: a fresh container boots with systemd,
//! installs packages from the offline repository, downloads from the lab HTTP server, resolves
//! and updates DNS in knot, answers a prompt on a terminal, survives a reboot, and has a
//! journal. Every phase is timed (`--nocapture` shows the `[timing]` lines).

use std::time::Instant;
use vm_tests::{timed, Debian, Lab, RunOpts, Zone};

#[test]
fn lab_smoke() {
    smoke(Debian::Bookworm);
}

#[test]
fn lab_smoke_on_debian13() {
    smoke(Debian::Trixie);
}

fn smoke(debian: Debian) {
    let total = Instant::now();
    let lab = timed("lab ready (base image + repo + netns)", || Lab::on("lab_smoke", debian));
    let mut node = timed("boot fresh node", || lab.boot("smoke1"));
    let os = node.read_file("/etc/os-release");
    assert!(os.contains(&format!("VERSION_ID=\"{}\"", debian.version())), "{os}");

    // systemd is PID 1 and healthy; identity and address are what the lab assigned.
    assert_eq!(node.exec(&["cat", "/proc/1/comm"]).stdout.trim(), "systemd");
    assert_eq!(node.exec(&["systemctl", "is-system-running"]).stdout.trim(), "running");
    assert_eq!(node.run(&["hostname"]).stdout.trim(), "smoke1");
    assert_eq!(node.addr().to_string(), "198.18.0.10");
    let addrs = node.exec(&["ip", "-4", "-o", "addr", "show", "host0"]).stdout;
    assert!(addrs.contains("198.18.0.10/24"), "host0 addresses: {addrs}");
    timed("ping lab host", || node.run(&["ping", "-c1", "-W2", "198.18.0.1"]).assert_ok("ping 198.18.0.1"));

    // Exit codes, stderr and environment make it through systemd-run.
    let r = node.sh("echo out; echo err >&2; exit 3");
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (3, "out\n", "err\n"));
    let r = node.run_opts(
        &["sh", "-c", "echo \"$GREETING\"; cat"],
        &RunOpts::default().env("GREETING", "hello").stdin("from stdin"),
    );
    assert_eq!(r.stdout, "hello\nfrom stdin");
    // Arguments arrive literally (systemd would otherwise expand `${x}` itself).
    assert_eq!(
        node.sh("x=abc; echo ${x} ${#x} $x $$x").stdout.split_whitespace().take(3).collect::<Vec<_>>(),
        ["abc", "3", "abc"]
    );
    // A failed command must not leave the system degraded (units are collected).
    assert_eq!(node.exec(&["systemctl", "is-system-running"]).stdout.trim(), "running");

    // Packages come from the offline repository only.
    let sources = node.read_file("/etc/apt/sources.list");
    assert_eq!(sources.trim(), "deb [trusted=yes] file:/srv/repo ./");
    timed("apt-get install cron curl bind9-dnsutils (offline)", || {
        node.run_opts(
            &[
                "sh",
                "-c",
                "apt-get update -q && apt-get install -y -q --no-install-recommends cron curl bind9-dnsutils",
            ],
            &RunOpts::default().env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .assert_ok("apt-get install");
    });
    assert_eq!(node.exec(&["systemctl", "is-active", "cron"]).stdout.trim(), "active");
    assert!(node.exists("/usr/bin/curl"));

    // The node downloads from the lab's HTTP server, as an operator would fetch the binary.
    let web = lab.http_server(8080);
    web.put("hello.txt", "hello from the lab\n");
    timed("wget from lab HTTP server", || {
        node.run(&["wget", "-q", "-O", "/root/hello.txt", &web.url("hello.txt")]).assert_ok("wget");
    });
    assert_eq!(node.read_file("/root/hello.txt"), "hello from the lab\n");
    assert_eq!(node.run(&["wget", "-q", "-O", "-", &web.url("missing")]).code, 8, "404 must fail wget");
    assert_eq!(web.requests(), vec!["GET /hello.txt 200", "GET /missing 404"]);

    // DNS: knot answers SRV queries from the node, and accepts TSIG-signed updates from it.
    let knot = timed("knot start", || {
        lab.start_knot(&[Zone::new("lab.test")
            .record("_postgresql._tcp 60 IN SRV 0 0 5432 db1")
            .record("db1 60 IN A 198.18.0.20")])
    });
    let srv = node.run(&["dig", "+short", "SRV", "_postgresql._tcp.lab.test"]);
    assert_eq!(srv.assert_ok("dig").stdout.trim(), "0 0 5432 db1.lab.test.");
    timed("RFC 2136 update from the node", || {
        let update = "server 198.18.0.1\nzone lab.test.\nupdate add smoke1.lab.test. 60 A 198.18.0.10\nsend\n";
        node.run_opts(&["nsupdate", "-y", &knot.tsig_key().to_y_arg()], &RunOpts::default().stdin(update))
            .assert_ok("nsupdate");
    });
    assert_eq!(knot.query("smoke1.lab.test", "A"), vec!["198.18.0.10"]);
    knot.update("lab.test", &["add _postgresql._tcp.lab.test. 60 SRV 0 0 5432 db2.lab.test."]);
    let srv = node.run(&["dig", "+short", "SRV", "_postgresql._tcp.lab.test"]).stdout;
    assert!(srv.contains("db1.lab.test.") && srv.contains("db2.lab.test."), "SRV after update: {srv}");
    // An unsigned update is refused.
    let refused = node.run_opts(
        &["nsupdate"],
        &RunOpts::default()
            .stdin("server 198.18.0.1\nzone lab.test.\nupdate add evil.lab.test. 60 A 198.18.0.66\nsend\n"),
    );
    assert_ne!(refused.code, 0, "unsigned update must be refused: {refused:?}");

    // A real terminal: answer a prompt, get the exit code.
    timed("pty prompt", || {
        let mut pty = node.pty(&["sh", "-c", "read -p 'name: ' x; echo hi-$x; exit 4"]);
        pty.expect("name: ");
        pty.send_line("bob");
        pty.expect("hi-bob");
        let (code, _) = pty.wait();
        assert_eq!(code, 4);
    });
    // Secret prompts have no echo: what we type must not be shown back.
    let mut pty = node.pty(&["sh", "-c", "stty -echo; printf 'secret: '; read s; stty echo; echo; echo len=${#s}"]);
    pty.expect("secret: ");
    pty.send_line("hunter2");
    let shown = pty.expect("len=7");
    assert!(!shown.contains("hunter2"), "secret was echoed: {shown:?}");
    assert_eq!(pty.wait().0, 0);

    // State on disk survives a reboot; enabled services come back.
    node.put_file("/root/marker", b"before-reboot", 0o600);
    node.run(&["logger", "-t", "smoke", "marker-before-reboot"]).assert_ok("logger");
    timed("reboot", || node.reboot());
    assert_eq!(node.read_file("/root/marker"), "before-reboot");
    assert_eq!(node.exec(&["systemctl", "is-active", "cron"]).stdout.trim(), "active");
    assert_eq!(node.run(&["hostname"]).stdout.trim(), "smoke1");

    // The journal is readable, and persistent across the reboot.
    let journal = timed("read journal", || node.journal(&["-t", "smoke"]));
    assert!(journal.contains("marker-before-reboot"), "journal: {journal}");
    let boots = node.journal(&["--list-boots"]);
    assert!(boots.lines().count() >= 2, "expected 2 boots in the journal:\n{boots}");
    assert!(node.journal(&["-b", "-u", "cron"]).contains("cron"));

    drop(knot);
    drop(web);
    timed("teardown", move || {
        drop(node);
        drop(lab);
    });
    eprintln!("[timing] lab_smoke total: {:.1}s", total.elapsed().as_secs_f64());
}

/// Two nodes on the same bridge see each other, and stopping one leaves the other intact
/// (each container has its own cgroup subtree).
#[test]
fn two_nodes() {
    let lab = Lab::new("two_nodes");
    let a = timed("boot node a", || lab.boot("node-a"));
    let b = timed("boot node b", || lab.boot("node-b"));
    assert_eq!(b.addr().to_string(), "198.18.0.11");
    a.run(&["ping", "-c1", "-W2", &b.addr().to_string()]).assert_ok("ping a -> b");
    b.run(&["ping", "-c1", "-W2", &a.addr().to_string()]).assert_ok("ping b -> a");
    assert_eq!(b.run(&["hostname"]).stdout.trim(), "node-b");
    let journald_a = a.exec(&["systemctl", "show", "-p", "MainPID", "--value", "systemd-journald"]).stdout;
    timed("power off node b", || drop(b));
    assert_eq!(a.exec(&["systemctl", "is-system-running"]).stdout.trim(), "running");
    let journald_a_after = a.exec(&["systemctl", "show", "-p", "MainPID", "--value", "systemd-journald"]).stdout;
    assert_eq!(journald_a, journald_a_after, "node a's journald was disturbed by node b's shutdown");
}
