//! A lab's private network: a namespace with one bridge, `198.18.0.1/24`, shared by nodes and peers.
//!
//! Nothing outside the namespace can reach it, and it only ever uses addresses from 198.18.0.0/15
//! (RFC 2544 benchmarking range).

use crate::cmd;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// The lab host's address on the bridge: DNS (knot), ACME (pebble) and HTTP downloads live here.
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const PREFIX_LEN: u8 = 24;
/// The bridge's name inside the namespace (each lab has its own namespace, so it can be fixed).
pub const BRIDGE: &str = "br-lab";

/// The namespace `/run/netns/<name>`. It is deleted by its owner (`delete`), not on Drop, so
/// the lab decides the order of its teardown.
pub(crate) struct Netns {
    name: String,
    next_host: AtomicU8,
}

impl Netns {
    /// A handle only: `create` makes the namespace.
    pub(crate) fn named(name: &str) -> Netns {
        Netns { name: name.into(), next_host: AtomicU8::new(10) }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Creates the namespace with loopback up and the bridge holding `HOST_ADDR`.
    pub(crate) fn create(&self) {
        let ip = |args: &[&str]| {
            let mut c = cmd::host("ip");
            c.arg("-n").arg(&self.name).args(args);
            cmd::run_ok(&mut c, Duration::from_secs(10));
        };
        cmd::run_ok(cmd::host("ip").args(["netns", "add", &self.name]), Duration::from_secs(10));
        ip(&["link", "set", "lo", "up"]);
        ip(&["link", "add", BRIDGE, "type", "bridge"]);
        ip(&["addr", "add", &format!("{HOST_ADDR}/{PREFIX_LEN}"), "dev", BRIDGE]);
        ip(&["link", "set", BRIDGE, "up"]);
    }

    /// Deletes the namespace (and with it the bridge). Never panics: used in Drop.
    pub(crate) fn delete(&self) {
        let _ = cmd::host("ip").args(["netns", "delete", &self.name]).output();
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A host command that runs inside the namespace. `nsenter --net=…` rather than
    /// `ip netns exec`: the latter remounts /sys, which breaks systemd-nspawn.
    pub(crate) fn command(&self, program: &str) -> Command {
        let mut c = cmd::host("nsenter");
        c.arg(format!("--net={}", self.path().display()));
        c.arg(crate::preconditions::find_in_path(program).unwrap_or_else(|| program.into()));
        c
    }

    /// Runs `f` on a thread that has joined the namespace; the rest of the process is unaffected.
    pub(crate) fn in_netns<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let ns = File::open(self.path()).unwrap_or_else(|e| panic!("open netns {}: {e}", self.name));
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns(2) on a valid namespace fd; a network namespace switch affects
                // only the calling thread, which ends with this scope.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    panic!("setns into {}: {}", self.name, std::io::Error::last_os_error());
                }
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Next free node address on the bridge, 198.18.0.10 upwards.
    pub(crate) fn allocate_addr(&self) -> Ipv4Addr {
        let n = self.next_host.fetch_add(1, Ordering::SeqCst);
        assert!((10..=250).contains(&n), "lab {} ran out of node addresses", self.name);
        Ipv4Addr::new(198, 18, 0, n)
    }
}
