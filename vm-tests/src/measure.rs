//! Figures the scenarios print for BENCHMARKS.md (never asserted).

use std::time::Duration;

use crate::{Node, RunOpts};

/// The installed binary's no-op `apply` on `node`, timed by hyperfine (20 runs after 3
/// warm-ups): prints `[measure] no-op run on NODE …` with the median and the minimum.
pub fn noop_run(node: &Node, what: &str) {
    node.sh("apt-get install -y -qq hyperfine >/dev/null").assert_ok("hyperfine");
    let argv = [
        "hyperfine",
        "-N",
        "--warmup",
        "3",
        "--runs",
        "20",
        "--export-json",
        "/run/h.json",
        "/usr/local/sbin/bootstrap apply",
    ];
    let r = node.run_opts(&argv, &RunOpts::default().timeout(Duration::from_secs(120)));
    if r.success() {
        let v: serde_json::Value = serde_json::from_str(&node.read_file("/run/h.json")).unwrap_or_default();
        let ms = |k: &str| v["results"][0][k].as_f64().unwrap_or(f64::NAN) * 1000.0;
        eprintln!(
            "[measure] no-op run on {} ({what}; hyperfine, 20 runs): median {:.1} ms, min {:.1} ms",
            node.name(),
            ms("median"),
            ms("min")
        );
    }
}
