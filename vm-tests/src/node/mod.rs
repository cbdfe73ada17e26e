//! Nodes: fresh Debian systems booted with systemd-nspawn on the lab bridge; the type and its accessors.
//!
//! A node's root is a private copy of the cached base image, so it can be changed freely and
//! rebooted with its state kept. Commands run inside through `nsenter` into the container's
//! PID 1 (`machinectl` and `systemd-run -M` need a systemd host, which we don't have).

mod boot;
mod builder;
mod exec;
mod files;
mod identity;

pub use builder::NodeBuilder;
pub use exec::RunOpts;

use crate::cgroup::Cgroup;
use crate::lab::LabInner;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;

/// A booted (or stopped, between `shutdown` and `start`) container. Dropping it powers it off
/// and removes its tree.
pub struct Node {
    lab: Arc<LabInner>,
    name: String,
    machine: String,
    addr: Ipv4Addr,
    /// Container root on the host.
    root: PathBuf,
    /// Per-node scratch: rootfs/ and console.log.
    home: PathBuf,
    nspawn_args: Vec<String>,
    nspawn: Option<Child>,
    pid1: u32,
    cgroup: Cgroup,
}

impl Node {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
    /// The Debian release it runs (its lab's).
    pub fn debian(&self) -> crate::Debian {
        self.lab.debian
    }
    /// The container's root directory on the host.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// PID (in the host's view) of the container's systemd.
    pub fn pid1(&self) -> u32 {
        assert!(self.nspawn.is_some(), "node {} is not running", self.name);
        self.pid1
    }
    /// Everything the container printed on its console (all boots), for diagnostics.
    pub fn console_log(&self) -> String {
        fs::read_to_string(self.console_path()).unwrap_or_default()
    }

    fn console_path(&self) -> PathBuf {
        self.home.join("console.log")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
        crate::cleanup::remove_tree(&self.home);
    }
}
