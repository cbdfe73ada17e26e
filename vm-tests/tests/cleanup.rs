//! A failing test must not leave anything behind: after a panic with a node, knot, pebble and
//! the HTTP server running, their processes, the namespace and the scratch tree are gone.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use vm_tests::{Lab, Zone};

#[test]
fn cleanup_after_panic() {
    let mut seen = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::new("cleanup_after_panic");
        let knot = lab.start_knot(&[Zone::new("lab.test")]);
        let pebble = lab.start_pebble();
        let _web = lab.http_server(8080);
        let node = lab.boot("doomed");
        let pids = [node.pid1(), knot_pid(&knot), pebble_pid(&pebble)];
        seen = Some((lab.name().to_string(), lab.dir().to_path_buf(), pids));
        panic!("simulated test failure");
    }));
    assert!(result.is_err(), "the closure should have panicked");
    let (netns, dir, pids) = seen.expect("the lab was set up before the panic");
    assert!(!Path::new("/run/netns").join(&netns).exists(), "namespace {netns} left behind");
    assert!(!dir.exists(), "scratch tree {} left behind", dir.display());
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "process {pid} still running");
    }
}

fn knot_pid(knot: &vm_tests::Knot) -> u32 {
    knot.pid().expect("knot is running")
}

fn pebble_pid(pebble: &vm_tests::Pebble) -> u32 {
    pebble.pid().expect("pebble is running")
}
