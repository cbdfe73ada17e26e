//! The lab: a private network namespace with one bridge, `198.18.0.1/24`, that the nodes and the
//! peers (knot, pebble, the HTTP server) share. Nothing outside the namespace can reach it, and
//! it only ever uses addresses from 198.18.0.0/15 (RFC 2544 benchmarking range).

use crate::cmd;
use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The lab host's address on the bridge: DNS (knot), ACME (pebble) and HTTP downloads live here.
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const PREFIX_LEN: u8 = 24;
/// The bridge's name inside the namespace (each lab has its own namespace, so it can be fixed).
pub const BRIDGE: &str = "br-lab";
/// Where per-lab scratch data lives (container trees, configs, logs); removed with the lab.
///
/// `$BOOTSTRAP_VM_SCRATCH`, else `/dev/shm/bootstrap-vm-tests` when /dev/shm is a tmpfs
/// mounted without nosuid/nodev/noexec (copying the 220 MB base image there takes ~0.5 s
/// instead of ~6 s on the build machines' ext4, and dpkg/PostgreSQL fsyncs become free), else
/// `/var/tmp/bootstrap-vm-tests`.
pub fn scratch_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        if let Some(p) = std::env::var_os("BOOTSTRAP_VM_SCRATCH") {
            return PathBuf::from(p);
        }
        let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
        let shm_ok = mounts.lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.len() > 3
                && f[1] == "/dev/shm"
                && f[2] == "tmpfs"
                && !f[3]
                    .split(',')
                    .any(|o| matches!(o, "nosuid" | "nodev" | "noexec" | "ro"))
        });
        PathBuf::from(if shm_ok { "/dev/shm" } else { "/var/tmp" }).join("bootstrap-vm-tests")
    })
    .clone()
}

/// A lab for one test. Dropping it (also on panic) stops what it started and deletes the
/// namespace; nodes and peers keep the shared part alive until they are dropped too.
pub struct Lab {
    pub(crate) inner: Arc<LabInner>,
}

pub(crate) struct LabInner {
    /// Namespace name, `bvt-<test>-<pid>-<n>`: unique per test so tests can run in parallel.
    pub(crate) name: String,
    /// Scratch directory of this lab.
    pub(crate) dir: PathBuf,
    pub(crate) base: PathBuf,
    pub(crate) repo: PathBuf,
    next_host: AtomicU8,
}

impl Lab {
    /// Checks preconditions, makes sure the base image and the offline repository exist (built
    /// once, cached), and creates the namespace with its bridge.
    pub fn new(test_name: &str) -> Lab {
        crate::preconditions::check();
        let base = crate::image::base();
        let repo = crate::repo::repo();
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let slug: String = test_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(20)
            .collect();
        let name = format!(
            "bvt-{slug}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        crate::cleanup::report_stale_labs();
        let dir = scratch_root().join(&name);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        // From here on, Drop of `inner` undoes whatever part got created.
        let inner = Arc::new(LabInner {
            name,
            dir,
            base,
            repo,
            next_host: AtomicU8::new(10),
        });
        let ip = |args: &[&str]| {
            let mut c = cmd::host("ip");
            c.arg("-n").arg(&inner.name).args(args);
            cmd::run_ok(&mut c, Duration::from_secs(10));
        };
        cmd::run_ok(
            cmd::host("ip").args(["netns", "add", &inner.name]),
            Duration::from_secs(10),
        );
        ip(&["link", "set", "lo", "up"]);
        ip(&["link", "add", BRIDGE, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{HOST_ADDR}/{PREFIX_LEN}"),
            "dev",
            BRIDGE,
        ]);
        ip(&["link", "set", BRIDGE, "up"]);
        eprintln!(
            "[vm-tests] lab {} ready (bridge {BRIDGE} {HOST_ADDR}/{PREFIX_LEN})",
            inner.name
        );
        Lab { inner }
    }

    /// The namespace's name (`/run/netns/<name>`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// This lab's scratch directory (removed with the lab).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The offline repository's host path (bound at `/srv/repo` in every node).
    pub fn repo(&self) -> &Path {
        &self.inner.repo
    }

    /// A host command that runs inside the lab's network namespace.
    pub fn command(&self, program: &str) -> Command {
        self.inner.command(program)
    }

    /// Runs `f` on a thread that has joined the lab's network namespace: sockets it creates
    /// (listeners, connections) belong to the lab. The rest of the process is unaffected.
    pub fn in_netns<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.inner.in_netns(f)
    }
}

impl LabInner {
    pub(crate) fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `nsenter --net=…` rather than `ip netns exec`: the latter remounts /sys, which breaks
    /// systemd-nspawn.
    pub(crate) fn command(&self, program: &str) -> Command {
        let mut c = cmd::host("nsenter");
        c.arg(format!("--net={}", self.netns_path().display()));
        c.arg(crate::preconditions::find_in_path(program).unwrap_or_else(|| program.into()));
        c
    }

    pub(crate) fn in_netns<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let ns = File::open(self.netns_path())
            .unwrap_or_else(|e| panic!("open netns {}: {e}", self.name));
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns(2) on a valid namespace fd; a network namespace switch affects
                // only the calling thread, which ends with this scope.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    panic!(
                        "setns into {}: {}",
                        self.name,
                        std::io::Error::last_os_error()
                    );
                }
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Next free node address, 198.18.0.10 upwards.
    pub(crate) fn allocate_addr(&self) -> Ipv4Addr {
        let n = self.next_host.fetch_add(1, Ordering::SeqCst);
        assert!(
            (10..=250).contains(&n),
            "lab {} ran out of node addresses",
            self.name
        );
        Ipv4Addr::new(198, 18, 0, n)
    }
}

impl Drop for LabInner {
    fn drop(&mut self) {
        // Everything started in the lab holds an Arc to us, so by now it has all been stopped.
        let _ = cmd::host("ip")
            .args(["netns", "delete", &self.name])
            .output();
        crate::cleanup::remove_tree(&self.dir);
        crate::cgroup::remove_lab(&self.name);
    }
}
