//! The foundation on a fresh Debian node: the binary is fetched with wget, `--check` tells the
//! truth and writes nothing, `apply` converges, drift is listed and healed, and a second run
//! changes nothing.

use vm_tests::operator::{bootstrap, download, serve_binary};
use vm_tests::report::{self, Status};
use vm_tests::Lab;

#[test]
fn fresh_node_converges_and_heals_drift() {
    let lab = Lab::new("first_converge");
    let http = lab.http_server(0);
    serve_binary(&http);
    let node = lab.boot("app1");
    download(&node, &http);
    let motd_before = node.read_file("/etc/motd");

    let check = bootstrap(&node, &["--check", "--json", "app"]);
    assert_eq!(check.code, 2, "{}{}", check.stdout, check.stderr);
    assert!(report::parse(&check).ids_with(Status::Pending).contains(&"motd".to_string()));
    assert_eq!(node.read_file("/etc/motd"), motd_before, "--check changed /etc/motd");
    assert!(!node.exists("/var/www/bootstrap"), "--check created a directory");

    let apply = bootstrap(&node, &["apply", "app"]);
    assert_eq!(apply.code, 0, "{}{}", apply.stdout, apply.stderr);
    assert!(node.read_file("/etc/motd").contains("app1 (app)"));
    assert!(node.read_file("/var/www/bootstrap/index.html").contains("<h1>app1</h1>"));
    let mode = node.run(&["stat", "-c", "%a %U", "/etc/bootstrap"]).assert_ok("stat");
    assert_eq!(mode.stdout.trim(), "700 root");

    // With no settings at all the node serves: self-signed TLS, the landing page.
    let page = node.run(&["wget", "--no-check-certificate", "-qO-", "https://127.0.0.1/"]).assert_ok("https");
    assert!(page.stdout.contains("<h1>app1</h1>"), "{}", page.stdout);
    let redirect = node.run(&["wget", "--max-redirect=0", "-S", "-qO-", "http://127.0.0.1/"]);
    assert!(
        redirect.stderr.contains(" 301 ") && redirect.stderr.to_lowercase().contains("location: https://127.0.0.1/"),
        "{}",
        redirect.stderr
    );

    // Drift: the banner edited, the page deleted.
    node.sh("echo local edit >> /etc/motd && rm /var/www/bootstrap/index.html").assert_ok("drift");
    let check = bootstrap(&node, &["--check", "--json", "app"]);
    assert_eq!(check.code, 2);
    assert_eq!(report::parse(&check).ids_with(Status::Pending), ["motd", "landing-page"]);
    let heal = bootstrap(&node, &["apply", "--json", "app"]);
    assert_eq!(report::parse(&heal).ids_with(Status::Changed), ["motd", "landing-page"]);
    let page =
        node.run(&["wget", "--no-check-certificate", "-qO-", "https://127.0.0.1/"]).assert_ok("https after heal");
    assert!(page.stdout.contains("<h1>app1</h1>"), "the healed page is not served (haproxy not reloaded?)");

    // Idempotence: a second run changes nothing, and --check exits 0.
    let again = bootstrap(&node, &["apply", "--json", "app"]);
    assert_eq!(report::parse(&again).changed, 0, "{}", again.stdout);
    let check = bootstrap(&node, &["--check", "app"]);
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
}
