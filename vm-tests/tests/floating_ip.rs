//! The fleet's fixed entry point: three app nodes share a floating IP with keepalived (VRRP,
//! unicast peers discovered from the fleet's SRV records, no preemption), and each holds a
//! pebble-issued certificate for the shared name `www.lab.test` (and its own name), obtained by
//! DNS-01 through knot with the fleet's TSIG key; no `_acme-challenge` record is left. A client
//! loop against the address, verifying the chain for the shared name, measures the outage when
//! the master's haproxy stops and when the master's container dies; the master coming back does
//! not take the address back. `/admin` through any node reaches the authoritative node (app1),
//! a clear 503 while it is down; a singleton cron job runs there only. `bootstrap drain` hands
//! the address to a peer and withdraws the node's SRV record until `undrain`. The VRRP password stays in
//! the root-only config; every node ends converged.

use std::time::{Duration, Instant};

use vm_tests::cmd::{poll, wait_for};
use vm_tests::front::{holder, holder_but, now, outage, probe_log, start_probe};
use vm_tests::operator::{download, serve_binary};
use vm_tests::report::{apply, check};
use vm_tests::{timed, Lab, Node, RunOpts, Zone};

const VIP: &str = "198.18.0.100";
const VRRP_PASSWORD: &str = "canaryvr";
const SHARED: &str = "www.lab.test";

/// The app role plus a job that must run once per fleet.
const FRONT_ROLE: &str = r#"
description = "App node with a fleet-wide job"
includes = ["app"]

[[state]]
id = "stamp-job"
type = "cron"
name = "fleet-stamp"
schedule = "* * * * *"
command = "echo $(hostname) $(date +%s) >> /var/tmp/fleet-stamp.log"
singleton = true
"#;

/// GET `path` of `node` by its own name, verified against the CA; the body or the status.
fn fetch(client: &Node, node: &Node, path: &str) -> String {
    let name = format!("{}.lab.test", node.name());
    client
        .run(&[
            "curl",
            "-s",
            "--cacert",
            "/root/root.pem",
            "--max-time",
            "3",
            "--resolve",
            &format!("{name}:443:{}", node.addr()),
            "-w",
            " %{http_code}",
            &format!("https://{name}{path}"),
        ])
        .stdout
}

#[test]
fn three_app_nodes_keep_the_floating_ip_answering() {
    let lab = Lab::new("vip");
    let knot = lab.start_knot(&[Zone::new("lab.test")]);
    let key = knot.tsig_key().clone();
    let pebble = lab.start_pebble();
    let http = lab.http_server(0);
    serve_binary(&http);
    let mut nodes: Vec<Node> = ["app1", "app2", "app3"].iter().map(|n| lab.boot(n)).collect();
    let client = lab.boot("client");
    client.sh("apt-get update -qq && apt-get install -y -qq curl >/dev/null").assert_ok("curl");
    client.put_file("/root/root.pem", pebble.issuing_root().as_bytes(), 0o644);
    let site = |node: &Node| {
        format!(
            "dns_zone = \"lab.test\"\ndns_server = \"198.18.0.1:53\"\ntsig_key_name = \"{}\"\n\
             private_cidr = \"198.18.0.0/24\"\nfloating_ip = \"{VIP}/24\"\n\
             domain = \"{}.lab.test\"\nshared_domain = \"{SHARED}\"\nacme_challenge = \"dns-01\"\n\
             acme_directory = \"https://198.18.0.1:14000/dir\"\nacme_ca_file = \"/etc/bootstrap/acme-ca.pem\"\n\
             admin_node = \"app1.lab.test\"\nfloating_ip_hook = \"/usr/bin/touch /var/tmp/took-the-address\"\n",
            key.name,
            node.name()
        )
    };
    let secrets = RunOpts::default()
        .env("BOOTSTRAP_SECRET_DNS_TSIG_KEY", &key.secret)
        .env("BOOTSTRAP_SECRET_DB_PASSWORD", "canary-db-Pw-0001")
        .env("BOOTSTRAP_SECRET_VRRP_PASSWORD", VRRP_PASSWORD)
        .timeout(Duration::from_secs(600));
    for node in &nodes {
        download(node, &http);
        node.put_file("/root/site.toml", site(node).as_bytes(), 0o644);
        node.put_file("/etc/bootstrap/acme-ca.pem", pebble.ca_pem().as_bytes(), 0o644);
        node.put_file("/root/roles/front.toml", FRONT_ROLE.as_bytes(), 0o644);
        let r = timed(&format!("./bootstrap front on {}", node.name()), || {
            node.run_opts(
                &["/root/bootstrap", "--site", "/root/site.toml", "--roles", "/root/roles", "front"],
                &secrets,
            )
        });
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    }
    // Nodes installed earlier learn of the later ones on their next run.
    for node in &nodes {
        apply(node);
        let cfg = node.read_file("/etc/keepalived/keepalived.conf");
        let block = cfg.split("unicast_peer {").nth(1).and_then(|b| b.split('}').next()).unwrap_or_default();
        let mut peers: Vec<&str> = block.split_whitespace().collect();
        peers.sort();
        let mut others: Vec<String> =
            nodes.iter().filter(|n| n.name() != node.name()).map(|n| n.addr().to_string()).collect();
        others.sort();
        assert_eq!(peers, others, "{}: unicast peers:\n{cfg}", node.name());
    }
    // Every node holds a CA certificate for the shared name and its own, by DNS-01; the
    // challenge records are gone.
    for node in &nodes {
        let san = node.sh("openssl x509 -noout -ext subjectAltName -issuer < /etc/haproxy/certs/site.pem").stdout;
        assert!(
            san.contains(&format!("DNS:{SHARED}")) && san.contains(&format!("DNS:{}.lab.test", node.name())),
            "{san}"
        );
        assert!(san.contains("Pebble"), "{}: not issued by the CA: {san}", node.name());
    }
    for name in [SHARED.to_string()].into_iter().chain(nodes.iter().map(|n| format!("{}.lab.test", n.name()))) {
        let left = knot.query(&format!("_acme-challenge.{name}"), "TXT");
        assert!(left.is_empty(), "challenge records left for {name}: {left:?}");
    }
    // The admin paths go to the authoritative node from every node; a clear 503 while it is down,
    // and back once its health check passes again.
    let (app1, app2, app3) = (&nodes[0], &nodes[1], &nodes[2]);
    for via in [app1, app2, app3] {
        let body = fetch(&client, via, "/admin/orders");
        assert!(body.contains("<h1>app1</h1>") && body.ends_with(" 200"), "/admin via {}: {body}", via.name());
        assert!(fetch(&client, via, "/").contains(&format!("<h1>{}</h1>", via.name())), "/ via {}", via.name());
    }
    app1.run(&["systemctl", "stop", "haproxy"]).assert_ok("stop haproxy on app1");
    wait_for("a 503 for /admin via app2", Duration::from_secs(10), || {
        let body = fetch(&client, app2, "/admin");
        (body.ends_with(" 503") && body.contains("the admin node app1.lab.test is not available")).then_some(())
    });
    assert!(fetch(&client, app3, "/").ends_with(" 200"), "the rest of app3 went down with the admin node");
    app1.run(&["systemctl", "start", "haproxy"]).assert_ok("start haproxy on app1");
    let back = Instant::now();
    wait_for("/admin via app2 again", Duration::from_secs(10), || {
        fetch(&client, app2, "/admin").contains("<h1>app1</h1>").then_some(())
    });
    eprintln!("[timing] /admin served again {:.1} s after the admin node returned", back.elapsed().as_secs_f64());
    // The singleton job: on app1 only.
    assert!(app1.exists("/etc/cron.d/fleet-stamp"));
    assert!(!app2.exists("/etc/cron.d/fleet-stamp") && !app3.exists("/etc/cron.d/fleet-stamp"));
    let installed = Instant::now();

    let all: Vec<&Node> = nodes.iter().collect();
    let first = holder(VIP, &all, Duration::from_secs(30)).name().to_string();
    start_probe(&client, &format!("--cacert /root/root.pem --resolve {SHARED}:443:{VIP} https://{SHARED}/"));
    wait_for("the address answers", Duration::from_secs(10), || {
        probe_log(&client).lines().last().filter(|l| l.ends_with(&first)).map(|_| ())
    });

    // haproxy stops on the master: it gives the address up.
    let master = nodes.iter().find(|n| n.name() == first).unwrap();
    // The node's own schedule must not heal haproxy in the middle of the measurement: the
    // test holds bootstrap's lock there meanwhile (a scheduled run then exits 75).
    master
        .exec(&[
            "systemd-run",
            "--unit=bt-hold-lock",
            "--collect",
            "--quiet",
            "flock",
            "/run/bootstrap.lock",
            "sleep",
            "300",
        ])
        .assert_ok("hold the lock");
    wait_for("the lock held", Duration::from_secs(10), || {
        (!master.exec(&["flock", "-n", "/run/bootstrap.lock", "true"]).success()).then_some(())
    });
    let t = now(&client);
    master.run(&["systemctl", "stop", "haproxy"]).assert_ok("stop haproxy");
    assert!(master.exists("/var/tmp/took-the-address"), "the hook did not run on {first}");
    let second = holder_but(VIP, &all, &first, Duration::from_secs(30)).name().to_string();
    let second_node = nodes.iter().find(|n| n.name() == second).unwrap();
    wait_for("the hook on the new master", Duration::from_secs(5), || {
        second_node.exists("/var/tmp/took-the-address").then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let (secs, by) = outage(&client, t);
    assert_eq!(by, second);
    eprintln!("[figure] floating IP: haproxy stopped on {first}: {secs:.1} s without an answer, then {second}");
    // The next run heals haproxy there; the address stays where it is (no preemption).
    master.exec(&["systemctl", "stop", "bt-hold-lock"]).assert_ok("release the lock");
    assert_eq!(apply(master).changed, 1);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(holder(VIP, &all, Duration::from_secs(5)).name(), second, "the healed node took the address back");

    // The master's machine dies.
    let t = now(&client);
    let dead = nodes.iter().position(|n| n.name() == second).unwrap();
    let killed = Instant::now();
    nodes[dead].kill();
    let alive: Vec<&Node> = nodes.iter().enumerate().filter(|(i, _)| *i != dead).map(|(_, n)| n).collect();
    let third = holder(VIP, &alive, Duration::from_secs(30)).name().to_string();
    eprintln!("[timing] address moved after the kill within {:.1} s", killed.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(2));
    let (secs, by) = outage(&client, t);
    assert_eq!(by, third);
    eprintln!("[figure] floating IP: {second} killed: {secs:.1} s without an answer, then {third}");

    // It comes back: keepalived starts there (enabled), and the address does not move.
    nodes[dead].start();
    let back = &nodes[dead];
    poll(Duration::from_secs(30), || {
        (back.run(&["systemctl", "is-active", "keepalived"]).stdout.trim() == "active").then_some(())
    })
    .expect("keepalived runs again on the returned node");
    std::thread::sleep(Duration::from_secs(5));
    let all: Vec<&Node> = nodes.iter().collect();
    assert_eq!(holder(VIP, &all, Duration::from_secs(5)).name(), third, "the returned node took the address back");

    // The VRRP password: only in the root-only config, nowhere in logs or process lists.
    for node in &nodes {
        let mode = node.run(&["stat", "-c", "%a %U", "/etc/keepalived/keepalived.conf"]).stdout;
        assert_eq!(mode.trim(), "600 root", "{}", node.name());
        // The pattern in a root-only file, so no command line (grep's, this script's) holds it.
        node.put_file("/root/canary", format!("{VRRP_PASSWORD}\n").as_bytes(), 0o600);
        let leaks = node.sh(
            "journalctl --no-pager | grep -c -f /root/canary; \
             grep -l -f /root/canary /proc/[0-9]*/cmdline 2>/dev/null | wc -l; \
             grep -rl -f /root/canary /var/log /var/lib/bootstrap /etc /run 2>/dev/null | grep -v -e '^/etc/keepalived/keepalived.conf$' -e '^/etc/bootstrap/secrets.toml$' -e '^/var/lib/bootstrap/backup/' ; true",
        );
        assert_eq!(
            leaks.stdout.split_whitespace().collect::<Vec<_>>(),
            ["0", "0"],
            "{}: {}",
            node.name(),
            leaks.stdout
        );
        let backups = node.sh("find /var/lib/bootstrap/backup -type f -perm /077 | wc -l").stdout;
        assert_eq!(backups.trim(), "0", "{}: a backup readable by others", node.name());
    }

    // Drain the holder: the address goes to a peer, its SRV record goes, and scheduled runs keep
    // it so; undrain brings it back without taking the address.
    let all: Vec<&Node> = nodes.iter().collect();
    let drained = holder(VIP, &all, Duration::from_secs(10));
    let srv = |n: &Node| format!("0 0 443 {}.lab.test.", n.name());
    let r = drained.run(&["/usr/local/sbin/bootstrap", "drain"]);
    assert_eq!(r.code, 0, "drain: {}{}", r.stdout, r.stderr);
    let taker = holder_but(VIP, &all, drained.name(), Duration::from_secs(15)).name().to_string();
    assert!(!knot.query("_https._tcp.lab.test", "SRV").contains(&srv(drained)), "the drained node's SRV record stayed");
    assert_eq!(drained.run(&["systemctl", "is-active", "keepalived"]).stdout.trim(), "inactive");
    assert_eq!(apply(drained).changed, 0, "a scheduled run undid the drain");
    assert_eq!(check(drained).0, 0);
    assert!(drained.run(&["/usr/local/sbin/bootstrap", "status"]).stdout.contains("drained since"));
    let r = drained.run(&["/usr/local/sbin/bootstrap", "undrain"]);
    assert_eq!(r.code, 0, "undrain: {}{}", r.stdout, r.stderr);
    assert!(
        knot.query("_https._tcp.lab.test", "SRV").contains(&srv(drained)),
        "undrain did not restore the SRV record"
    );
    assert_eq!(drained.run(&["systemctl", "is-active", "keepalived"]).stdout.trim(), "active");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(holder(VIP, &all, Duration::from_secs(5)).name(), taker, "the undrained node took the address back");
    assert!(!drained.run(&["/usr/local/sbin/bootstrap", "status"]).stdout.contains("drained since"));

    // The singleton job ran (cron, every minute) on app1 alone, over five intervals (a node's
    // death among them): once per interval, never on two nodes.
    let stamps = wait_for("five runs of the singleton job", Duration::from_secs(420), || {
        let log = nodes[0].sh("cat /var/tmp/fleet-stamp.log 2>/dev/null || true").stdout;
        (log.lines().count() >= 5).then_some(log)
    });
    eprintln!("[timing] five singleton runs {:.0} s after the install", installed.elapsed().as_secs_f64());
    assert!(stamps.lines().all(|l| l.starts_with("app1 ")), "{stamps}");
    // Once per interval: no minute twice.
    let minutes: Vec<u64> =
        stamps.lines().filter_map(|l| l.split(' ').nth(1)?.parse::<u64>().ok()).map(|t| t / 60).collect();
    let mut unique = minutes.clone();
    unique.dedup();
    assert_eq!(minutes, unique, "the singleton ran twice in a minute: {stamps}");
    assert!(!nodes[1].exists("/var/tmp/fleet-stamp.log") && !nodes[2].exists("/var/tmp/fleet-stamp.log"));

    // Converged: a run changes nothing and --check exits 0 on every node.
    client.run(&["systemctl", "stop", "probe"]);
    for node in &nodes {
        assert_eq!(apply(node).changed, 0, "{} changed on a second run", node.name());
        assert_eq!(check(node).0, 0, "{} --check", node.name());
    }
}
