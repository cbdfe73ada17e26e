//! Preparing a node before its first boot: options, files, the copy of the base image.

use super::Node;
use crate::cgroup::Cgroup;
use crate::cmd;
use crate::Lab;
use std::fs;
use std::time::{Duration, Instant};

/// A node being prepared: files and nspawn options set here take effect from the first boot.
pub struct NodeBuilder<'a> {
    lab: &'a Lab,
    name: String,
    nspawn_args: Vec<String>,
    files: Vec<(String, Vec<u8>, u32)>,
}

impl NodeBuilder<'_> {
    /// `Lab::node`: `name` becomes the hostname, so it must be a short one.
    pub(crate) fn new<'a>(lab: &'a Lab, name: &str) -> NodeBuilder<'a> {
        assert!(
            !name.is_empty() && name.len() <= 40 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "node name {name:?} must be a short hostname"
        );
        NodeBuilder { lab, name: name.into(), nspawn_args: Vec::new(), files: Vec::new() }
    }

    /// An extra `systemd-nspawn` argument, kept for reboots too.
    pub fn nspawn_arg(mut self, arg: &str) -> Self {
        self.nspawn_args.push(arg.into());
        self
    }
    /// A systemd credential, visible inside as `/run/credentials/@system/<name>`.
    pub fn credential(self, name: &str, value: &str) -> Self {
        self.nspawn_arg(&format!("--set-credential={name}:{value}"))
    }
    /// Docker can run inside: the kernel keyring calls runc makes, and the cgroup v1
    /// controllers (read-only in a container) remounted read-write before dockerd starts, by a
    /// drop-in of the lab's own (what a VM would not need). Its cgroups on the host are removed
    /// with the lab.
    pub fn docker(self) -> Self {
        self.lab.inner.docker.store(true, std::sync::atomic::Ordering::SeqCst);
        let remount: Vec<String> = crate::cgroup::DOCKER_CONTROLLERS
            .iter()
            .map(|c| format!("ExecStartPre=/bin/mount -o remount,bind,rw /sys/fs/cgroup/{c}\n"))
            .collect();
        let dropin = format!(
            "# The lab's: cgroup v1 controllers are read-only in a container.\n[Service]\n{}",
            remount.concat()
        );
        self.nspawn_arg("--system-call-filter=@keyring").file(
            "/etc/systemd/system/docker.service.d/00-lab-cgroups.conf",
            dropin,
            0o644,
        )
    }
    /// A file written into the node's tree before its first boot.
    pub fn file(mut self, path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.files.push((path.into(), contents.into(), mode));
        self
    }
    /// Copies the base image, writes the node's identity, boots it and waits until systemd
    /// reports `running`. Panics (after cleaning up) if it doesn't get there.
    pub fn boot(self) -> Node {
        let lab = self.lab.inner.clone();
        let addr = lab.netns.allocate_addr();
        let home = lab.dir.join(&self.name);
        let root = home.join("rootfs");
        fs::create_dir_all(&home).unwrap();
        let t = Instant::now();
        let mut cp = cmd::host("cp");
        cp.args(["-a", "--reflink=auto"]).arg(&lab.base).arg(&root);
        cmd::run_ok(&mut cp, Duration::from_secs(300));
        let copy_time = t.elapsed();
        // Unique per lab: nspawn keeps per-machine state under /run/systemd/nspawn/ on the host.
        let machine = format!("{}-{}", self.name, &crate::cache::key(&[lab.name()])[..8]);
        let mut node = Node {
            cgroup: Cgroup::create(lab.name(), &self.name),
            lab,
            name: self.name,
            machine,
            addr,
            root,
            home,
            nspawn_args: self.nspawn_args,
            nspawn: None,
            pid1: 0,
        };
        node.write_identity();
        for (path, contents, mode) in &self.files {
            node.put_file(path, contents, *mode);
        }
        node.start();
        eprintln!(
            "[vm-tests] node {} ({}) up: copy {:.1}s, total {:.1}s",
            node.name,
            node.addr,
            copy_time.as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
        node
    }
}
