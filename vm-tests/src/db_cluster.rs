//! Watching the HA database from the lab: Patroni's members as `patronictl` lists them, and a
//! writer on an app node that inserts through its pool and logs each acknowledged insert, from
//! which the seconds without writes around a fault and the inserts lost are read.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::{Node, RunResult};

/// Each acknowledged insert, one line: `<n> <unix time>`.
pub const ACKED: &str = "/root/acked";

/// (name, role, state) of every member, as `patronictl list` on `node` sees them.
pub fn members(node: &Node) -> Vec<(String, String, String)> {
    let r = node.run(&["patronictl", "-c", "/etc/patroni/config.yml", "list", "-f", "json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_default();
    let s = |m: &serde_json::Value, k: &str| m[k].as_str().unwrap_or("").to_string();
    v.as_array().map(|a| a.iter().map(|m| (s(m, "Member"), s(m, "Role"), s(m, "State"))).collect()).unwrap_or_default()
}

/// The running leader's name, as `node` sees it.
pub fn leader(node: &Node) -> Option<String> {
    members(node).into_iter().find(|(_, role, state)| role == "Leader" && state == "running").map(|(n, _, _)| n)
}

/// Waits until `node` sees `n` members running, one of them the leader; panics after `limit`.
pub fn wait_cluster(node: &Node, n: usize, limit: Duration) -> Vec<(String, String, String)> {
    let t = Instant::now();
    loop {
        let m = members(node);
        let running = m.iter().filter(|(_, _, s)| s == "running" || s == "streaming").count();
        if running == n && m.iter().any(|(_, r, _)| r == "Leader") {
            return m;
        }
        assert!(t.elapsed() < limit, "{} does not see {n} running members: {m:?}", node.name());
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// psql as postgres on the node itself, on database `app`.
pub fn psql_local(node: &Node, sql: &str) -> RunResult {
    node.run(&["runuser", "-u", "postgres", "--", "psql", "-X", "-A", "-t", "-d", "app", "-c", sql])
}

/// Starts the writer on `app` (unit `writer`): `insert into acks values (N)` through the pool
/// on 127.0.0.1:5432 every ~20 ms, each on a new connection, with bootstrap's credentials.
pub fn start_writer(app: &Node) {
    app.put_file(
        "/root/writer.sh",
        format!(
            "#!/bin/sh\nset -a; . /etc/bootstrap/app/database.env; PGCONNECT_TIMEOUT=2\ni=1\nwhile true; do\n  \
             if psql -X -q -c \"insert into acks values ($i)\" >/dev/null 2>&1; then echo \"$i $(date +%s.%N)\" >> {ACKED}; i=$((i+1)); fi\n  \
             sleep 0.02\ndone\n"
        )
        .as_bytes(),
        0o755,
    );
    app.run(&["systemd-run", "--unit", "writer", "/root/writer.sh"]).assert_ok("writer");
}

/// The acknowledged inserts so far: (n, when).
pub fn acked(app: &Node) -> Vec<(u64, f64)> {
    let text = if app.exists(ACKED) { app.read_file(ACKED) } else { String::new() };
    text.lines()
        .filter_map(|l| {
            let (n, t) = l.split_once(' ')?;
            Some((n.parse().ok()?, t.parse().ok()?))
        })
        .collect()
}

pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// After a fault at `at`: waits until writes resume (an insert acknowledged more than 2 s
/// after it: one in flight at the fault is answered within milliseconds, or never), lets the
/// writer run 3 s more and stops it. Returns the seconds until writes resumed and every
/// acknowledged insert.
pub fn writes_resumed(app: &Node, at: f64, limit: Duration) -> (f64, BTreeSet<u64>) {
    let t = Instant::now();
    while !acked(app).iter().any(|(_, w)| *w > at + 2.0) {
        assert!(t.elapsed() < limit, "writes did not resume within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    app.run(&["systemctl", "stop", "writer"]).assert_ok("stop writer");
    let all = acked(app);
    let resumed = all.iter().map(|(_, w)| *w).find(|w| *w > at + 2.0).unwrap() - at;
    (resumed, all.into_iter().map(|(n, _)| n).collect())
}

/// The inserts of `seen` missing from `acks` on `node`.
pub fn lost(node: &Node, seen: &BTreeSet<u64>) -> Vec<u64> {
    let stored: BTreeSet<u64> = psql_local(node, "select n from acks")
        .assert_ok("acks")
        .stdout
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    seen.difference(&stored).copied().collect()
}
