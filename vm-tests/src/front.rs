//! Watching the fleet's front from a client node: which app node holds the floating IP, and a
//! probe loop (curl every 0.1 s, 1 s timeout, the answering node's `<h1>` name) from which the
//! seconds without an answer around a fault are read.

use std::time::Duration;

use crate::cmd::poll;
use crate::Node;

/// The client's probe log: one line per request, `<unix time> <hostname or FAIL>`.
pub const PROBE_LOG: &str = "/root/probe.log";

pub fn holds(node: &Node, vip: &str) -> bool {
    node.run(&["ip", "-4", "-o", "addr", "show"]).stdout.contains(&format!("inet {vip}/"))
}

/// The one node that holds `vip`, once exactly one does.
pub fn holder<'a>(vip: &str, nodes: &[&'a Node], within: Duration) -> &'a Node {
    holder_but(vip, nodes, "", within)
}

/// The one node that holds `vip`, once exactly one does and it is not `not`; panics with each
/// node's addresses and keepalived's log otherwise.
pub fn holder_but<'a>(vip: &str, nodes: &[&'a Node], not: &str, within: Duration) -> &'a Node {
    let found = poll(within, || {
        let held: Vec<&Node> = nodes.iter().copied().filter(|n| holds(n, vip)).collect();
        (held.len() == 1 && held[0].name() != not).then(|| held[0])
    });
    found.unwrap_or_else(|| {
        let why: Vec<String> = nodes
            .iter()
            .map(|n| {
                let s = n.sh("ip -4 -o addr show; systemctl is-active keepalived haproxy; journalctl -u keepalived --no-pager | tail -15");
                format!("--- {}:\n{}{}", n.name(), s.stdout, s.stderr)
            })
            .collect();
        panic!("not exactly one node holds {vip} after {within:?}:\n{}", why.join("\n"))
    })
}

/// The probe log so far (empty before its first line).
pub fn probe_log(client: &Node) -> String {
    client.sh(&format!("cat {PROBE_LOG} 2>/dev/null || true")).stdout
}

/// Start the probe on `client` as a transient unit `probe`: `curl -s CURL_ARGS` in a loop.
pub fn start_probe(client: &Node, curl_args: &str) {
    let script = format!(
        "while :; do h=$(curl -s --max-time 1 {curl_args} | sed -n 's:.*<h1>\\(.*\\)</h1>.*:\\1:p'); \
         echo \"$(date +%s.%N) ${{h:-FAIL}}\" >> {PROBE_LOG}; sleep 0.1; done"
    );
    client.run(&["systemd-run", "--unit", "probe", "sh", "-c", &script]).assert_ok("start the probe");
}

/// Seconds without an answer after `since` (the client's unix time), and who answers after.
pub fn outage(client: &Node, since: f64) -> (f64, String) {
    let log = probe_log(client);
    let lines: Vec<(f64, String)> = log
        .lines()
        .filter_map(|l| l.split_once(' ').and_then(|(t, h)| Some((t.parse::<f64>().ok()?, h.to_string()))))
        .filter(|(t, _)| *t >= since)
        .collect();
    let first_fail = lines.iter().find(|(_, h)| h == "FAIL").map(|(t, _)| *t);
    let Some(fail) = first_fail else { return (0.0, lines.last().map(|l| l.1.clone()).unwrap_or_default()) };
    let back = lines.iter().find(|(t, h)| *t > fail && h != "FAIL").expect("the address answered again");
    // From the last answer before the gap (or the fault itself) to the first one after it.
    let before = lines.iter().rev().find(|(t, h)| *t < fail && h != "FAIL").map_or(since, |l| l.0);
    (back.0 - before, back.1.clone())
}

/// The client's clock, as the probe log writes it.
pub fn now(client: &Node) -> f64 {
    client.run(&["date", "+%s.%N"]).stdout.trim().parse().unwrap()
}
