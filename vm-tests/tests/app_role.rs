//! The app role on fresh nodes with real peers (knot for DNS, pebble for ACME): the embedded
//! roles, installed as an operator does. Proves, in order:
//! - with pebble down at the first run, the node serves its self-signed certificate and haproxy
//!   runs; once pebble is up, the next run obtains the ACME certificate and haproxy serves it
//!   after a reload, not a restart;
//! - from another container: https verifies against pebble's root, http redirects, and only 22,
//!   80 and 443 answer; a table added by hand survives; settings that would close SSH are
//!   refused with nothing changed;
//! - the node registered itself in knot and discovered the db nodes from SRV records: a second
//!   SRV record joins the pool on the next run; with knot unreachable the pool keeps its members;
//! - drift (haproxy.cfg deleted, the nft table flushed, haproxy stopped, the certificate deleted)
//!   is listed by `--check` and healed in one run; then a run changes nothing and `--check` exits 0.

use std::time::Duration;

use vm_tests::operator::{download, serve_binary, INSTALLED};
use vm_tests::report::{self, apply, pending, Status};
use vm_tests::{timed, Debian, Lab, Node, RunOpts, Zone};

const SITE: &str = r#"domain = "app1.lab.test"
acme_directory = "https://198.18.0.1:14000/dir"
acme_email = "ops@lab.test"
acme_ca_file = "/etc/bootstrap/acme-ca.pem"
dns_zone = "lab.test"
dns_server = "198.18.0.1:53"
private_cidr = "198.18.0.0/24"
"#;

fn pool(node: &Node) -> Vec<String> {
    let cfg = node.read_file("/etc/haproxy/haproxy.cfg");
    cfg.lines().filter(|l| l.trim_start().starts_with("server db")).map(|l| l.trim().to_string()).collect()
}

fn main_pid(node: &Node) -> String {
    node.run(&["systemctl", "show", "-p", "MainPID", "--value", "haproxy"])
        .assert_ok("MainPID")
        .stdout
        .trim()
        .to_string()
}

fn issuer(client: &Node) -> String {
    client
        .sh("echo | openssl s_client -connect app1.lab.test:443 -servername app1.lab.test 2>/dev/null | openssl x509 -noout -issuer")
        .stdout
}

/// Does `port` on the app node answer a TCP connect from `client` within 2 s?
fn answers(client: &Node, port: u16) -> bool {
    client.run(&["nc", "-z", "-w", "2", "198.18.0.10", &port.to_string()]).code == 0
}

#[test]
fn app_node_tls_firewall_discovery_and_drift() {
    scenario(Debian::Bookworm);
}

#[test]
fn app_node_tls_firewall_discovery_and_drift_on_debian13() {
    scenario(Debian::Trixie);
}

fn scenario(debian: Debian) {
    let lab = Lab::on("app_role", debian);
    let knot = lab.start_knot(&[Zone::new("lab.test")
        .record("db1 60 IN A 198.18.0.50")
        .record("db2 60 IN A 198.18.0.51")
        .record("_postgresql._tcp 60 IN SRV 0 0 5432 db1.lab.test.")]);
    let key = knot.tsig_key().clone();
    let http = lab.http_server(0);
    serve_binary(&http);
    let app = lab.boot("app1");
    let client = lab.boot("client");
    assert_eq!(app.addr().to_string(), "198.18.0.10");
    for (node, pkgs) in [(&app, "openssh-server netcat-openbsd"), (&client, "curl netcat-openbsd openssl")] {
        node.sh(&format!("apt-get update -qq && apt-get install -y -qq {pkgs} >/dev/null")).assert_ok("tools");
    }
    // Listeners the firewall must hide (8080) and show (22 by sshd).
    app.exec(&["systemd-run", "--unit=probe-8080", "nc", "-lk", "-p", "8080"]).assert_ok("listener");
    download(&app, &http);
    let site = format!("{SITE}tsig_key_name = \"{}\"\n", key.name);
    app.put_file("/root/site.toml", site.as_bytes(), 0o644);
    let secret = RunOpts::default()
        .env("BOOTSTRAP_SECRET_DNS_TSIG_KEY", &key.secret)
        .env("BOOTSTRAP_SECRET_DB_PASSWORD", "app-role-db-password")
        .timeout(Duration::from_secs(300));

    // First install with the CA down: self-signed, haproxy up, the acme state failed.
    let first = timed("install app1 (CA down)", || {
        app.run_opts(&["/root/bootstrap", "--site", "/root/site.toml", "app"], &secret)
    });
    assert_eq!(first.code, 1, "expected only the ACME state to fail:\n{}\n{}", first.stdout, first.stderr);
    assert!(first.stdout.contains("✗ tls-acme"), "{}\n{}", first.stdout, first.stderr);
    assert_eq!(first.stdout.matches('✗').count(), 1, "{}", first.stdout);
    assert_eq!(vm_tests::operator::settled_state(&app, "haproxy"), "active");
    let iss = issuer(&client);
    assert!(iss.contains("app1.lab.test"), "self-signed expected, got {iss}");

    // Registration and discovery.
    assert_eq!(knot.query("app1.lab.test", "A"), ["198.18.0.10"]);
    assert_eq!(knot.query("_https._tcp.lab.test", "SRV"), ["0 0 443 app1.lab.test."]);
    assert_eq!(pool(&app), ["server db1.lab.test 198.18.0.50:5432 check"]);

    // The CA comes up: the next run obtains the certificate; haproxy reloads, same main PID.
    let pebble = lab.start_pebble();
    app.put_file("/etc/bootstrap/acme-ca.pem", pebble.ca_pem().as_bytes(), 0o644);
    client.put_file("/root/root.pem", pebble.issuing_root().as_bytes(), 0o644);
    let pid = main_pid(&app);
    let r = timed("obtain the ACME certificate", || apply(&app));
    let acme = report::state(&r, "tls-acme");
    assert_eq!(acme.status, Status::Changed, "{acme:?}");
    assert_eq!(main_pid(&app), pid, "haproxy was restarted, not reloaded");
    let page = client
        .run(&["curl", "-sS", "--fail", "--cacert", "/root/root.pem", "https://app1.lab.test/"])
        .assert_ok("https");
    assert!(page.stdout.contains("<h1>app1</h1>"), "{}", page.stdout);
    let redirect =
        client.run(&["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "http://app1.lab.test/x"]);
    assert_eq!(redirect.stdout, "301 https://app1.lab.test/x");
    let hsts = client.run(&["curl", "-sSI", "--cacert", "/root/root.pem", "https://app1.lab.test/"]).stdout;
    assert!(hsts.to_lowercase().contains("strict-transport-security"), "{hsts}");
    let tls11 =
        client.run(&["curl", "-sS", "--tls-max", "1.1", "--cacert", "/root/root.pem", "https://app1.lab.test/"]);
    assert_ne!(tls11.code, 0, "TLS 1.1 was accepted");

    // The firewall, seen from the client: only 22, 80 and 443.
    for (port, open) in [(22, true), (80, true), (443, true), (8080, false), (5432, false), (8402, false)] {
        assert_eq!(answers(&client, port), open, "port {port}");
    }
    app.sh("nft add table inet operator && nft add chain inet operator keep '{ type filter hook input priority 10; }'")
        .assert_ok("own table");
    apply(&app);
    assert!(app.run(&["nft", "list", "table", "inet", "operator"]).success(), "the operator's table was removed");

    // Settings that would close SSH: refused, nothing changed.
    let ruleset = app.run(&["nft", "list", "table", "inet", "bootstrap"]).stdout;
    app.put_file("/root/closed.toml", format!("{site}ssh_from = []\n").as_bytes(), 0o644);
    let closed = app.run(&[INSTALLED, "--site", "/root/closed.toml", "apply"]);
    assert_eq!(closed.code, 1);
    assert!(
        format!("{}{}", closed.stdout, closed.stderr).to_lowercase().contains("ssh"),
        "{}{}",
        closed.stdout,
        closed.stderr
    );
    assert_eq!(app.run(&["nft", "list", "table", "inet", "bootstrap"]).stdout, ruleset, "the table changed");

    // A second db node in DNS joins the pool at the next run.
    knot.update("lab.test", &["add _postgresql._tcp.lab.test. 60 SRV 0 0 5432 db2.lab.test."]);
    apply(&app);
    let members = pool(&app);
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(members[1].ends_with("backup"), "{members:?}");

    // DNS unreachable: discovery keeps its members (registration fails, reported).
    let knot_pid = knot.pid().expect("knot runs").to_string();
    lab.command("kill").args(["-STOP", &knot_pid]).status().unwrap();
    let r = app.run(report::APPLY);
    lab.command("kill").args(["-CONT", &knot_pid]).status().unwrap();
    let rep = report::parse(&r);
    assert_eq!(pool(&app), members, "the pool lost members while DNS was down");
    let failed = rep.ids_with(Status::Failed);
    assert!(failed.iter().all(|id| id.starts_with("dns-")), "only DNS states may fail: {failed:?}");

    // Drift, listed beforehand and healed in one run.
    app.sh("rm /etc/haproxy/haproxy.cfg && nft flush table inet bootstrap").assert_ok("drift 1");
    let before = pending(&app);
    for id in ["haproxy-config", "firewall"] {
        assert!(before.contains(&id.to_string()), "{id} not listed: {before:?}");
    }
    apply(&app);
    app.sh("systemctl stop haproxy && rm /etc/haproxy/certs/site.pem").assert_ok("drift 2");
    let before = pending(&app);
    for id in ["haproxy-service", "tls-certificate"] {
        assert!(before.contains(&id.to_string()), "{id} not listed: {before:?}");
    }
    apply(&app);
    assert!(issuer(&client).contains("Pebble"), "the healed node does not serve an ACME certificate");

    // Idempotence.
    let again = apply(&app);
    assert_eq!(again.changed, 0, "{again:?}");
    assert_eq!(pending(&app), Vec::<String>::new());
    drop(pebble);
}
