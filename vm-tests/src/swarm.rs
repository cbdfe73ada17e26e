//! What the swarm scenarios share: the web image every node needs (no registry here) and a
//! look at the swarm from a manager.

use crate::Node;

/// Imports `lab/web:1` on `node`: busybox's httpd (the host's static busybox) serving
/// "$GREETING from $HOSTNAME" on port 80. Swarm starts a task only where its image is.
pub fn import_web_image(node: &Node) {
    let bb = std::fs::read("/bin/busybox").expect("busybox-static on the host (scripts/setup)");
    node.put_file("/root/img/bin/busybox", &bb, 0o755);
    node.put_file("/root/img/www/.keep", b"", 0o644);
    let cmd = r#"CMD ["/bin/busybox", "sh", "-c", "echo \"$GREETING from $(/bin/busybox hostname)\" > /www/index.html; exec /bin/busybox httpd -f -p 80 -h /www"]"#;
    node.sh(&format!("cd /root/img && tar -c . | docker import -c '{cmd}' - lab/web:1 >/dev/null"))
        .assert_ok("docker import");
}

/// `docker node ls` on `manager`: (hostname, status, manager status) per node.
pub fn node_list(manager: &Node) -> Vec<(String, String, String)> {
    let out = manager.run(&["docker", "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"]);
    out.stdout
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[0].to_string(), w.get(1).unwrap_or(&"").to_string(), w.get(2).unwrap_or(&"").to_string())
        })
        .collect()
}

/// The join token for `role` (manager, worker), as an operator reads it on a manager.
pub fn join_token(manager: &Node, role: &str) -> String {
    manager.run(&["docker", "swarm", "join-token", "-q", role]).assert_ok("join-token").stdout.trim().to_string()
}

/// A page from `url`, fetched on `from` (empty when nothing answers within 3 s).
pub fn fetch(from: &Node, url: &str) -> String {
    from.run(&["wget", "-q", "-T", "3", "-t", "1", "--no-check-certificate", "-O", "-", url]).stdout.trim().to_string()
}
