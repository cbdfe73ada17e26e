//! TLS on a fresh node, for real: haproxy terminates TLS with the bundle the `certificate` state
//! makes (self-signed) until the `acme` state gets one from pebble over HTTP-01, routed by
//! haproxy's :80 to the short-lived responder. Proves: with the CA down, the node serves its
//! self-signed certificate, the acme state fails, haproxy keeps running, and failures back
//! off; with the CA up, the certificate is obtained and served after a reload (same haproxy
//! main PID) and verifies against pebble's root; then nothing changes, and a deleted bundle is
//! listed by `--check` and healed by one run.

use std::time::Duration;

use vm_tests::cmd;
use vm_tests::operator::{run_test_role as bt, INSTALLED as BIN, TEST_ROLES as ROLES};
use vm_tests::report::{self, apply_test_role as apply, check_test_role as check_code, state, Status};
use vm_tests::{bootstrap_bin, timed, Lab, Node, RunOpts, Zone};

const CERT: &str = "/etc/haproxy/certs/site.pem";
const CA_FILE: &str = "/etc/bt-acme-ca.pem";
const ROOT_FILE: &str = "/root/pebble-root.pem";
const RECORD: &str = "/var/lib/bootstrap/acme/etc_haproxy_certs_site.pem.json";
const NAME: &str = "app1.lab.test";

const HAPROXY_CFG: &str = r#"# managed by bootstrap (lab test)
global
    log /dev/log local0

defaults
    log global
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend http
    bind :80
    acl acme path_beg /.well-known/acme-challenge/
    http-request redirect scheme https code 301 unless acme
    default_backend acme

frontend https
    bind :443 ssl crt /etc/haproxy/certs/site.pem
    http-request return status 200 content-type text/plain string "hello from app1"

backend acme
    server responder 127.0.0.1:8402
"#;

fn role(directory: &str) -> String {
    format!(
        r#"description = "issue 5 lab role: haproxy with a self-signed certificate, then one from ACME"

[[state]]
id = "certs-dir"
type = "directory"
path = "/etc/haproxy/certs"
mode = "0700"

[[state]]
id = "site-cert"
type = "certificate"
path = "{CERT}"
names = ["{NAME}"]
requires = ["certs-dir"]
notify = ["reload haproxy"]

[[state]]
id = "haproxy-cfg"
type = "file"
path = "/etc/haproxy/haproxy.cfg"
content = '''
{HAPROXY_CFG}'''
validate = ["haproxy", "-c", "-q", "-f", "{{}}"]
requires = ["site-cert"]
notify = ["reload haproxy"]

[[state]]
id = "haproxy"
type = "service"
name = "haproxy"
enabled = true
running = true
requires = ["haproxy-cfg"]

[[state]]
id = "site-acme"
type = "acme"
path = "{CERT}"
names = ["{NAME}"]
directory = "{directory}"
ca_file = "{CA_FILE}"
email = "ops@lab.test"
requires = ["haproxy"]
notify = ["reload haproxy"]
"#
    )
}

fn haproxy(node: &Node, prop: &str) -> String {
    node.exec(&["systemctl", "show", "--value", "-p", prop, "haproxy"]).assert_ok(prop).stdout.trim().to_string()
}

/// Issuer and subject of the certificate the node serves on :443, seen from the lab host.
fn served(lab: &Lab, node: &Node) -> (String, String) {
    let script = format!(
        "openssl s_client -connect {}:443 -servername {NAME} </dev/null 2>/dev/null | openssl x509 -noout -issuer -subject -nameopt RFC2253",
        node.addr()
    );
    let mut c = lab.command("sh");
    c.args(["-c", &script]);
    let out = cmd::run(&mut c, None, Duration::from_secs(20)).assert_ok("openssl s_client");
    let field = |k: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("{k} in {out:?}"))
            .trim()
            .to_string()
    };
    (field("issuer="), field("subject="))
}

#[test]
fn tls_self_signed_then_acme_from_pebble() {
    let lab = timed("lab ready", || Lab::new("tls"));
    let node = timed("boot", || lab.boot("app1"));
    let _dns = lab.start_knot(&[Zone::new("lab.test").record(&format!("app1 IN A {}", node.addr()))]);
    timed("apt-get install haproxy curl (offline)", || {
        node.run_opts(
            &["sh", "-c", "apt-get update -q && apt-get install -y -q --no-install-recommends haproxy curl"],
            &RunOpts::default().env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .assert_ok("apt-get install haproxy curl");
    });
    // The CA that pebble's HTTPS uses is the node's `ca_file`; pebble is then stopped, so the
    // first runs meet a CA that is down.
    let mut pebble = lab.start_pebble();
    let directory = pebble.directory_url();
    node.put_file(CA_FILE, pebble.ca_pem().as_bytes(), 0o644);
    pebble.stop();
    node.put_file(BIN, &std::fs::read(bootstrap_bin()).unwrap(), 0o755);
    node.put_file(&format!("{ROLES}/test.toml"), role(&directory).as_bytes(), 0o644);

    // Run 1, CA down: the self-signed certificate goes live, the acme state fails, haproxy runs.
    let r = timed("first run (CA down)", || bt(&node, &["apply", "--json"]));
    assert_eq!(r.code, 1, "a failed state fails the run:\n{}\n{}", r.stdout, r.stderr);
    let rep = report::parse(&r);
    let changed = rep.ids_with(Status::Changed);
    assert!(["certs-dir", "site-cert", "haproxy-cfg"].iter().all(|id| changed.iter().any(|c| c == id)), "{rep:?}");
    assert_eq!(rep.ids_with(Status::Failed), ["site-acme"]);
    let err = state(&rep, "site-acme").error.clone().unwrap();
    eprintln!("[run 1] site-acme: {err}");
    assert!(err.contains("attempt 1; the next run retries") && err.contains("the current certificate stays"), "{err}");
    assert_eq!(vm_tests::operator::settled_state(&node, "haproxy"), "active");
    assert_eq!(node.exec(&["stat", "-c", "%a %U", CERT]).stdout.trim(), "600 root");
    let (issuer, subject) = served(&lab, &node);
    assert_eq!((issuer.as_str(), subject.as_str()), ("CN=app1.lab.test", "CN=app1.lab.test"), "self-signed");
    let hello = node.run(&["curl", "-sSk", &format!("https://{NAME}/")]).assert_ok("curl -k");
    assert_eq!(hello.stdout, "hello from app1");
    let redirect = node.run(&[
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        &format!("http://{NAME}/x"),
    ]);
    assert_eq!(redirect.stdout, format!("301 https://{NAME}/x"));

    // Run 2: haproxy now routes the challenge path (reloaded by run 1), the CA is still down.
    let rep = report::parse(&bt(&node, &["apply", "--json"]));
    let err = state(&rep, "site-acme").error.clone().unwrap();
    eprintln!("[run 2] site-acme: {err}");
    assert!(err.contains("cannot register an ACME account") && err.contains("(attempt 2; retry after "), "{err}");
    // Backing off: nothing to do, said in the journal; the self-signed certificate serves on.
    let (code, _) = check_code(&node);
    assert_eq!(code, 0);
    assert!(node.journal(&["-t", "bootstrap"]).contains("ACME retry after"), "backoff is logged");
    assert_eq!(apply(&node).failed, 0);

    // The operator ends the wait (documented: remove the record) and the CA comes up.
    node.exec(&["rm", RECORD]).assert_ok("rm record");
    let pebble = timed("pebble start", || lab.start_pebble());
    node.put_file(CA_FILE, pebble.ca_pem().as_bytes(), 0o644);
    let main_pid = haproxy(&node, "MainPID");
    let (code, plan) = check_code(&node);
    assert_eq!(code, 2);
    assert_eq!(plan.ids_with(Status::Pending), ["site-acme"]);
    let summary = state(&plan, "site-acme").changes[0].summary.clone();
    assert_eq!(summary, format!("obtain certificate from {directory} for {NAME} (the current one is self-signed)"));

    let rep = timed("ACME run", || apply(&node));
    assert_eq!(rep.ids_with(Status::Changed), ["site-acme"]);
    assert_eq!(rep.notifications[0].notification, "reload haproxy");
    assert_eq!(rep.notifications[0].status, Status::Changed);
    eprintln!("[timing] ACME issuance (site-acme state, pebble): {} ms", state(&rep, "site-acme").duration_ms);
    assert_eq!(haproxy(&node, "MainPID"), main_pid, "a reload, not a restart");
    let (issuer, subject) = served(&lab, &node);
    assert_eq!(subject, "CN=app1.lab.test");
    assert!(issuer.contains("Pebble Intermediate"), "served issuer: {issuer}");
    node.put_file(ROOT_FILE, pebble.issuing_root().as_bytes(), 0o644);
    let ok =
        node.run(&["curl", "-sS", "--cacert", ROOT_FILE, &format!("https://{NAME}/")]).assert_ok("curl --cacert root");
    assert_eq!(ok.stdout, "hello from app1");
    assert_eq!(node.exec(&["stat", "-c", "%a %U", CERT]).stdout.trim(), "600 root");
    assert_eq!(node.exec(&["stat", "-c", "%a", "/var/lib/bootstrap/acme"]).stdout.trim(), "700");
    assert_eq!(node.exec(&["stat", "-c", "%a", "/var/lib/bootstrap/acme/account-key.pem"]).stdout.trim(), "600");

    // Converged.
    let rep = apply(&node);
    assert_eq!(rep.changed, 0, "{rep:?}");
    assert_eq!(check_code(&node).0, 0);

    // A deleted bundle: listed by --check, healed by one run (self-signed, then ACME again).
    node.exec(&["rm", CERT]).assert_ok("rm bundle");
    let (code, plan) = check_code(&node);
    assert_eq!(code, 2);
    assert_eq!(plan.ids_with(Status::Pending), ["site-cert", "site-acme"]);
    let rep = timed("heal a deleted bundle", || apply(&node));
    assert_eq!(rep.ids_with(Status::Changed), ["site-cert", "site-acme"]);
    assert_eq!(haproxy(&node, "MainPID"), main_pid);
    assert!(served(&lab, &node).0.contains("Pebble Intermediate"));
    node.run(&["curl", "-sS", "--cacert", ROOT_FILE, &format!("https://{NAME}/")]).assert_ok("curl after healing");
    assert_eq!(apply(&node).changed, 0);
    assert_eq!(check_code(&node).0, 0);

    // The bundle never shows in a report.
    let shown = bt(&node, &["--check", "--json"]).stdout + &node.journal(&["-t", "bootstrap"]);
    assert!(!shown.contains("PRIVATE KEY"));
}
