//! What an operator does on a fresh node: download the binary with wget from the lab's HTTP
//! server and run it. Shared by the scenarios and the `lab` demo.

use crate::{bootstrap_bin, HttpServer, Node, RunResult};

/// Where the operator's download lands on the node.
pub const DOWNLOADED: &str = "/root/bootstrap";

/// Serve the binary under test from the lab host.
pub fn serve_binary(http: &HttpServer) {
    http.put_file("bootstrap", &bootstrap_bin());
}

/// `wget` the binary into /root and make it executable, as the README tells operators.
pub fn download(node: &Node, http: &HttpServer) {
    node.run(&["wget", "-q", "-O", DOWNLOADED, &http.url("bootstrap")]).assert_ok("wget bootstrap");
    node.run(&["chmod", "+x", DOWNLOADED]).assert_ok("chmod bootstrap");
}

/// Run the downloaded binary with `args` as a systemd unit, without a terminal.
pub fn bootstrap(node: &Node, args: &[&str]) -> RunResult {
    let mut argv = vec![DOWNLOADED];
    argv.extend_from_slice(args);
    node.run(&argv)
}

/// The JSON report of a `--json` run.
pub fn report(r: &RunResult) -> serde_json::Value {
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("not a JSON report ({e}):\n{}\n{}", r.stdout, r.stderr))
}

/// Where scenarios that test one module put their own role directory and the binary.
pub const TEST_ROLES: &str = "/etc/bt-roles";
pub const INSTALLED: &str = "/usr/local/sbin/bootstrap";

/// `bootstrap --roles TEST_ROLES ARGS test`: the installed binary on a scenario's `test` role.
pub fn run_test_role(node: &Node, args: &[&str]) -> RunResult {
    let mut argv = vec![INSTALLED, "--roles", TEST_ROLES];
    argv.extend_from_slice(args);
    argv.push("test");
    node.run(&argv)
}

/// `apply --json` of the scenario's test role: must succeed; returns the report.
pub fn apply_test_role(node: &Node) -> serde_json::Value {
    let r = run_test_role(node, &["apply", "--json"]);
    assert_eq!(r.code, 0, "apply failed:\n{}\n{}", r.stdout, r.stderr);
    report(&r)
}

/// `--check` of the scenario's test role must exit 0: nothing left to change.
pub fn assert_test_role_converged(node: &Node) {
    let r = run_test_role(node, &["--check"]);
    assert_eq!(r.code, 0, "--check after converging:\n{}\n{}", r.stdout, r.stderr);
}

/// `bootstrap apply --json` of the installed binary on the node's recorded roles: must
/// succeed; returns the report.
pub fn apply_installed(node: &Node) -> serde_json::Value {
    let r = node.run(&[INSTALLED, "apply", "--json"]);
    assert_eq!(r.code, 0, "apply on {} failed:\n{}\n{}", node.name(), r.stdout, r.stderr);
    report(&r)
}

/// The ids `bootstrap --check` lists as pending; its exit code must agree (2, or 0 when none).
pub fn pending_installed(node: &Node) -> Vec<String> {
    let r = node.run(&[INSTALLED, "--check", "--json"]);
    let ids: Vec<String> = report(&r)["states"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "pending")
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(r.code, if ids.is_empty() { 0 } else { 2 }, "{}\n{}", r.stdout, r.stderr);
    ids
}

/// `unit`'s ActiveState once a reload in flight has finished: `systemctl reload` returns before
/// a Type=notify service (haproxy) reports ready again, so `reloading` is seen for a moment.
pub fn settled_state(node: &Node, unit: &str) -> String {
    let state = || node.exec(&["systemctl", "show", "--value", "-p", "ActiveState", unit]).stdout.trim().to_string();
    let t0 = std::time::Instant::now();
    let mut s = state();
    while s == "reloading" && t0.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        s = state();
    }
    s
}
