//! The lab for one test: its namespace, its scratch directory, and every way to put something in it.

use crate::debian::Debian;
use crate::network::{Netns, BRIDGE, HOST_ADDR, PREFIX_LEN};
use crate::places;
use crate::{HttpServer, Knot, Node, NodeBuilder, Pebble, Zone};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

/// A lab for one test. Dropping it (also on panic) stops what it started and deletes the
/// namespace; nodes and peers keep the shared part alive until they are dropped too.
pub struct Lab {
    pub(crate) inner: Arc<LabInner>,
}

/// The part of a lab that whatever runs in it holds on to.
pub(crate) struct LabInner {
    /// Named `bvt-<test>-<pid>-<n>`: unique per test so tests can run in parallel.
    pub(crate) netns: Netns,
    /// Scratch directory of this lab.
    pub(crate) dir: PathBuf,
    /// The cached base image every node's root is copied from.
    pub(crate) base: PathBuf,
    /// The offline apt repository, bound into every node.
    pub(crate) repo: PathBuf,
    /// The Debian release its nodes run.
    pub(crate) debian: Debian,
    /// A node ran Docker (`NodeBuilder::docker`): its cgroups on the host go with the lab.
    pub(crate) docker: AtomicBool,
}

impl LabInner {
    /// The lab's name: its namespace's, also used for its cgroup and machine names.
    pub(crate) fn name(&self) -> &str {
        self.netns.name()
    }
}

impl Drop for LabInner {
    fn drop(&mut self) {
        // Everything started in the lab holds an Arc to us, so by now it has all been stopped.
        self.netns.delete();
        crate::cleanup::remove_tree(&self.dir);
        crate::cgroup::remove_lab(self.name());
        if self.docker.load(Ordering::SeqCst) {
            crate::cgroup::remove_docker();
        }
    }
}

impl Lab {
    /// A lab of Debian 12 nodes: see `on`.
    pub fn new(test_name: &str) -> Lab {
        Lab::on(test_name, Debian::Bookworm)
    }

    /// Checks preconditions, makes sure the release's base image and offline repository exist
    /// (built once, cached), and creates the namespace with its bridge.
    pub fn on(test_name: &str, debian: Debian) -> Lab {
        crate::preconditions::check();
        let base = crate::image::base(debian);
        let repo = crate::repo::repo(debian);
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let slug: String = test_name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .take(20)
            .collect();
        let name = format!("bvt-{slug}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        crate::cleanup::report_stale_labs();
        let dir = places::scratch_root().join(&name);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        // From here on, Drop of `inner` undoes whatever part got created.
        let inner =
            Arc::new(LabInner { netns: Netns::named(&name), dir, base, repo, debian, docker: AtomicBool::new(false) });
        inner.netns.create();
        eprintln!(
            "[vm-tests] lab {} ready (Debian {}, bridge {BRIDGE} {HOST_ADDR}/{PREFIX_LEN})",
            inner.name(),
            debian.version()
        );
        Lab { inner }
    }

    /// The Debian release of its nodes.
    pub fn debian(&self) -> Debian {
        self.inner.debian
    }

    /// The namespace's name (`/run/netns/<name>`).
    pub fn name(&self) -> &str {
        self.inner.name()
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
        self.inner.netns.command(program)
    }

    /// Runs `f` on a thread that has joined the lab's network namespace: sockets it creates
    /// (listeners, connections) belong to the lab. The rest of the process is unaffected.
    pub fn in_netns<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.inner.netns.in_netns(f)
    }

    /// Prepares a node called `name` (its hostname) with the next free 198.18.0.x address.
    pub fn node(&self, name: &str) -> NodeBuilder<'_> {
        NodeBuilder::new(self, name)
    }

    /// Boots a node with default options.
    pub fn boot(&self, name: &str) -> Node {
        self.node(name).boot()
    }

    /// Starts knotd serving `zones` on 198.18.0.1:53 and waits until it answers.
    pub fn start_knot(&self, zones: &[Zone]) -> Knot {
        Knot::start(self, zones)
    }

    /// Starts pebble with a fresh TLS CA and server certificate and waits until its API accepts
    /// connections. It validates through knot at 198.18.0.1:53, so start knot first when
    /// certificates are to be issued.
    pub fn start_pebble(&self) -> Pebble {
        Pebble::start(self)
    }

    /// Starts serving files on `198.18.0.1:port` (`0` picks a free port; see `HttpServer::port`).
    pub fn http_server(&self, port: u16) -> HttpServer {
        HttpServer::start(self, port)
    }
}
