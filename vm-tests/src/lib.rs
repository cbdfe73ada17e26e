//! End-to-end test library: boots fresh Debian 12 or 13 systems (systemd-nspawn containers
//! from a cached debootstrap image) on a private bridge in a network namespace made for each
//! test, with real peers (knot, pebble, an HTTP server) on `198.18.0.1`, and an offline apt
//! repository so nothing needs the internet. See `/work/shared/vm-tests.md` for the measured
//! recipe this follows.
//!
//! ```no_run
//! use vm_tests::{Lab, Zone};
//! let lab = Lab::new("my_scenario");
//! let _dns = lab.start_knot(&[Zone::new("lab.test").record("app1 IN A 198.18.0.10")]);
//! let web = lab.http_server(8080);
//! web.put_file("bootstrap", &vm_tests::bootstrap_bin());
//! let node = lab.boot("app1");
//! node.run(&["wget", "-q", &web.url("bootstrap")]).assert_ok("download");
//! ```
//!
//! Everything started is stopped by its own PID on Drop (also when the test panics): nodes
//! power off cleanly, then peers stop, then the namespace and scratch trees are removed.
//! Tests must run as root; a host that can't run them makes the test fail, never skip.

pub mod binary;
pub mod cache;
pub mod canary;
pub mod cgroup;
pub mod cleanup;
pub mod cmd;
pub mod db_cluster;
pub mod debian;
pub mod front;
pub mod http;
pub mod image;
pub mod kill_points;
pub mod knot;
pub mod lab;
pub mod measure;
pub mod network;
pub mod node;
pub mod operator;
pub mod pebble;
pub mod places;
pub mod preconditions;
pub mod pty;
pub mod releases;
pub mod repo;
pub mod report;
pub mod swarm;

pub use binary::bootstrap_bin;
pub use cmd::RunResult;
pub use debian::Debian;
pub use http::HttpServer;
pub use knot::{Knot, TsigKey, Zone};
pub use lab::Lab;
pub use network::HOST_ADDR;
pub use node::{Node, NodeBuilder, RunOpts};
pub use pebble::Pebble;
pub use pty::Pty;

use std::time::Instant;

/// Runs `f`, printing `[timing] <what>: 1.23s` to stderr (visible with `--nocapture`), so
/// scenario timings can be recorded and budgets watched.
pub fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = f();
    eprintln!("[timing] {what}: {:.2}s", t.elapsed().as_secs_f64());
    v
}
