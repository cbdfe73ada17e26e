//! Running the binary as the scenarios do: an operator's wget-and-run, or the installed one on a test role.

use crate::{bootstrap_bin, cmd, HttpServer, Node, RunResult};
use std::time::Duration;

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

/// `unit`'s ActiveState once a reload in flight has finished: `systemctl reload` returns before
/// a Type=notify service (haproxy) reports ready again, so `reloading` is seen for a moment.
pub fn settled_state(node: &Node, unit: &str) -> String {
    let state = || node.exec(&["systemctl", "show", "--value", "-p", "ActiveState", unit]).stdout.trim().to_string();
    cmd::poll(Duration::from_secs(10), || Some(state()).filter(|s| s != "reloading")).unwrap_or_else(state)
}
