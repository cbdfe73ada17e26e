//! Pebble runs in the lab and a node reaches its ACME directory over HTTPS, trusting the CA the
//! lab made for it.

use vm_tests::{timed, Lab, RunOpts};

#[test]
fn pebble_directory() {
    let lab = Lab::new("pebble_directory");
    let pebble = timed("pebble start", || lab.start_pebble());
    let node = timed("boot", || lab.boot("acme1"));
    timed("apt-get install curl (offline)", || {
        node.run_opts(
            &["sh", "-c", "apt-get update -q && apt-get install -y -q --no-install-recommends curl"],
            &RunOpts::default().env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .assert_ok("apt-get install curl");
    });
    node.put_file("/root/pebble-ca.pem", pebble.ca_pem().as_bytes(), 0o644);
    let dir = timed("fetch ACME directory from the node", || {
        node.run(&["curl", "-sS", "--fail", "--cacert", "/root/pebble-ca.pem", &pebble.directory_url()])
    });
    let dir = dir.assert_ok("curl directory");
    assert!(dir.stdout.contains("\"newAccount\"") && dir.stdout.contains("\"newOrder\""), "directory: {}", dir.stdout);
    // Without the lab CA the connection must fail: TLS verification is real.
    let untrusted = node.run(&["curl", "-sS", "--fail", &pebble.directory_url()]);
    assert_ne!(untrusted.code, 0, "curl without --cacert must fail");
    let root = timed("fetch issuing root", || pebble.issuing_root());
    assert!(root.starts_with("-----BEGIN CERTIFICATE-----"), "issuing root: {root}");
}
