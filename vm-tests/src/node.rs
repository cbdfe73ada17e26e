//! Nodes: fresh Debian systems booted with systemd-nspawn on the lab bridge.
//!
//! A node's root is a private copy of the cached base image, so it can be changed freely and
//! rebooted with its state kept. Commands run inside through `nsenter` into the container's
//! PID 1 (`machinectl` and `systemd-run -M` need a systemd host, which we don't have).

use crate::cgroup::Cgroup;
use crate::cmd::{self, RunResult};
use crate::network::{Lab, LabInner, BRIDGE, HOST_ADDR, PREFIX_LEN};
use crate::pty::Pty;
use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a clean poweroff may take before nspawn is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// How long a boot may take to reach a settled state.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Options for one command run inside a node.
#[derive(Clone, Debug)]
pub struct RunOpts {
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
}

impl Default for RunOpts {
    fn default() -> Self {
        RunOpts {
            env: Vec::new(),
            stdin: None,
            timeout: Duration::from_secs(600),
        }
    }
}

impl RunOpts {
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// A node being prepared: files and nspawn options set here take effect from the first boot.
pub struct NodeBuilder<'a> {
    lab: &'a Lab,
    name: String,
    nspawn_args: Vec<String>,
    files: Vec<(String, Vec<u8>, u32)>,
}

impl NodeBuilder<'_> {
    /// An extra `systemd-nspawn` argument, kept for reboots too.
    pub fn nspawn_arg(mut self, arg: &str) -> Self {
        self.nspawn_args.push(arg.into());
        self
    }
    /// A systemd credential, visible inside as `/run/credentials/@system/<name>`.
    pub fn credential(self, name: &str, value: &str) -> Self {
        self.nspawn_arg(&format!("--set-credential={name}:{value}"))
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
        let addr = lab.allocate_addr();
        let home = lab.dir.join(&self.name);
        let root = home.join("rootfs");
        fs::create_dir_all(&home).unwrap();
        let t = Instant::now();
        let mut cp = cmd::host("cp");
        cp.args(["-a", "--reflink=auto"]).arg(&lab.base).arg(&root);
        cmd::run_ok(&mut cp, Duration::from_secs(300));
        let copy_time = t.elapsed();
        // Unique per lab: nspawn keeps per-machine state under /run/systemd/nspawn/ on the host.
        let machine = format!("{}-{}", self.name, &crate::cache::key(&[&lab.name])[..8]);
        let mut node = Node {
            cgroup: Cgroup::create(&lab.name, &self.name),
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

impl Lab {
    /// Prepares a node called `name` (its hostname) with the next free 198.18.0.x address.
    pub fn node(&self, name: &str) -> NodeBuilder<'_> {
        assert!(
            !name.is_empty()
                && name.len() <= 40
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "node name {name:?} must be a short hostname"
        );
        NodeBuilder {
            lab: self,
            name: name.into(),
            nspawn_args: Vec::new(),
            files: Vec::new(),
        }
    }

    /// Boots a node with default options.
    pub fn boot(&self, name: &str) -> Node {
        self.node(name).boot()
    }
}

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
        fs::read_to_string(self.home.join("console.log")).unwrap_or_default()
    }

    fn write_identity(&self) {
        self.put_file("etc/hostname", format!("{}\n", self.name).as_bytes(), 0o644);
        self.put_file(
            "etc/hosts",
            format!(
                "127.0.0.1\tlocalhost\n{}\t{}\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n",
                self.addr, self.name
            )
            .as_bytes(),
            0o644,
        );
        self.put_file(
            "etc/systemd/network/10-host0.network",
            format!(
                "[Match]\nName=host0\n\n[Network]\nAddress={}/{PREFIX_LEN}\nGateway={HOST_ADDR}\nDNS={HOST_ADDR}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n",
                self.addr
            )
            .as_bytes(),
            0o644,
        );
        self.put_file(
            "etc/resolv.conf",
            format!("nameserver {HOST_ADDR}\n").as_bytes(),
            0o644,
        );
        // A machine-id of its own, stable across reboots (journald, D-Bus and DHCP use it).
        let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
        self.put_file(
            "etc/machine-id",
            format!("{}\n", uuid.trim().replace('-', "")).as_bytes(),
            0o444,
        );
    }

    /// Boots the container from its tree and waits for systemd to settle.
    pub fn start(&mut self) {
        assert!(
            self.nspawn.is_none(),
            "node {} is already running",
            self.name
        );
        let console = File::options()
            .create(true)
            .append(true)
            .open(self.home.join("console.log"))
            .unwrap();
        let mut c = self.lab.command("systemd-nspawn");
        // --register=no --keep-unit: there is no systemd/machined on the host to talk to.
        c.args(["--register=no", "--keep-unit", "--boot", "--quiet"])
            .arg(format!("--directory={}", self.root.display()))
            .arg(format!("--machine={}", self.machine))
            .arg(format!("--hostname={}", self.name))
            .arg(format!("--network-bridge={BRIDGE}"))
            .arg(format!("--bind-ro={}:/srv/repo", self.lab.repo.display()))
            // We write resolv.conf/timezone ourselves; the journal stays inside the container.
            .args([
                "--console=read-only",
                "--resolv-conf=off",
                "--timezone=off",
                "--link-journal=no",
            ])
            .args(&self.nspawn_args)
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console);
        self.cgroup.ensure();
        let cgroup = self.cgroup.enter_fn();
        // SAFETY: the closure only makes async-signal-safe syscalls (see Cgroup).
        unsafe { c.pre_exec(cgroup) };
        let t = Instant::now();
        let child = c.spawn().unwrap_or_else(|e| {
            panic!("cannot start systemd-nspawn (or move it into its cgroup): {e}")
        });
        let nspawn_pid = child.id();
        self.nspawn = Some(child);
        // From here, a panic drops `self`, which stops the container.
        self.pid1 = cmd::wait_for(
            "the container's systemd to start",
            Duration::from_secs(30),
            || {
                if let Some(code) = self
                    .nspawn
                    .as_mut()
                    .unwrap()
                    .try_wait()
                    .ok()
                    .flatten()
                    .map(|s| s.code())
                {
                    panic!(
                        "systemd-nspawn for {} exited early ({code:?}):\n{}",
                        self.name,
                        cmd::tail(&self.home.join("console.log"), 30)
                    );
                }
                find_child(nspawn_pid, "systemd")
            },
        );
        // systemd's bus socket appears a moment after PID 1 starts; until then systemctl
        // prints nothing or `offline` (it can't reach systemd), so retry until it reports a
        // real state (and --wait then waits for settling).
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let state = loop {
            let r = self.exec_opts(
                &["systemctl", "is-system-running", "--wait"],
                &RunOpts::default().timeout(BOOT_TIMEOUT),
            );
            let said = r.stdout.trim();
            if (!said.is_empty() && said != "offline") || Instant::now() > deadline {
                break r;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if state.stdout.trim() != "running" {
            let failed = self.exec(&["systemctl", "--failed", "--no-pager"]);
            let errors = self.exec(&[
                "journalctl",
                "--no-pager",
                "-b",
                "-p",
                "warning",
                "-n",
                "40",
            ]);
            panic!(
                "node {} did not boot cleanly: system state {:?} {}\n{}\n--- journal (warnings) ---\n{}",
                self.name,
                state.stdout.trim(),
                state.stderr.trim(),
                failed.stdout,
                errors.stdout
            );
        }
        eprintln!(
            "[timing] boot {}: {:.2}s",
            self.name,
            t.elapsed().as_secs_f64()
        );
    }

    /// Clean poweroff: SIGTERM makes nspawn ask the container's systemd to shut down; SIGKILL
    /// only if that takes longer than STOP_GRACE.
    pub fn shutdown(&mut self) {
        if let Some(mut child) = self.nspawn.take() {
            cmd::terminate(&mut child, STOP_GRACE);
        }
        self.pid1 = 0;
        self.cgroup.remove();
    }

    /// Powers off and boots again from the same tree (~3 s); state on disk is kept.
    pub fn reboot(&mut self) {
        let t = Instant::now();
        self.shutdown();
        self.start();
        eprintln!(
            "[timing] reboot {}: {:.2}s",
            self.name,
            t.elapsed().as_secs_f64()
        );
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.nspawn.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// `nsenter` into every namespace of the container's PID 1.
    fn nsenter(&self) -> Command {
        let mut c = cmd::host("nsenter");
        c.arg("-t").arg(self.pid1().to_string()).arg("-a");
        c
    }

    /// Runs `argv` as a transient systemd service inside the node (the way a real service or
    /// an operator's command would run: clean environment, own cgroup, journald logging) and
    /// returns its exit code and output.
    pub fn run(&self, argv: &[&str]) -> RunResult {
        self.run_opts(argv, &RunOpts::default())
    }

    /// `run` with environment variables, stdin and/or a timeout.
    pub fn run_opts(&self, argv: &[&str], opts: &RunOpts) -> RunResult {
        let mut c = self.nsenter();
        // --collect: a failed command must not leave a failed unit that degrades the system.
        c.args(["systemd-run", "--wait", "--pipe", "--quiet", "--collect"]);
        for (k, v) in &opts.env {
            c.arg(format!("--setenv={k}={v}"));
        }
        c.arg("--").args(argv.iter().map(|a| literal(a)));
        cmd::run(&mut c, opts.stdin.as_deref(), opts.timeout)
    }

    /// `run(["sh", "-c", script])`.
    pub fn sh(&self, script: &str) -> RunResult {
        self.run(&["sh", "-c", script])
    }

    /// Runs `argv` directly in the container's namespaces, outside any unit: for quick
    /// inspection, also when systemd inside is not (yet) healthy.
    pub fn exec(&self, argv: &[&str]) -> RunResult {
        self.exec_opts(argv, &RunOpts::default())
    }

    pub fn exec_opts(&self, argv: &[&str], opts: &RunOpts) -> RunResult {
        let mut c = self.nsenter();
        // A clean environment: nothing from the test process (CARGO_*, RUST_*) leaks in.
        c.args([
            "env",
            "-i",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME=/root",
        ]);
        for (k, v) in &opts.env {
            c.arg(format!("{k}={v}"));
        }
        c.args(argv);
        cmd::run(&mut c, opts.stdin.as_deref(), opts.timeout)
    }

    /// Runs `argv` as a unit attached to a real terminal (`systemd-run --pty`), for prompts.
    pub fn pty(&self, argv: &[&str]) -> Pty {
        self.pty_opts(argv, &RunOpts::default().timeout(Duration::from_secs(60)))
    }

    /// `pty` with environment variables; `opts.timeout` bounds every single `expect`.
    pub fn pty_opts(&self, argv: &[&str], opts: &RunOpts) -> Pty {
        assert!(
            opts.stdin.is_none(),
            "a pty session takes its input through send_line"
        );
        let mut c = self.nsenter();
        c.args(["systemd-run", "--pty", "--wait", "--quiet", "--collect"]);
        for (k, v) in &opts.env {
            c.arg(format!("--setenv={k}={v}"));
        }
        c.arg("--").args(argv.iter().map(|a| literal(a)));
        // A plain terminal: prompts without colour codes or cursor tricks.
        c.env("TERM", "dumb");
        Pty::spawn(c, opts.timeout)
    }

    /// The node's journal, `journalctl --no-pager -o cat ARGS` (e.g. `["-u", "cron"]`, `["-b"]`).
    pub fn journal(&self, args: &[&str]) -> String {
        let mut argv = vec!["journalctl", "--no-pager", "-o", "cat"];
        argv.extend_from_slice(args);
        self.exec(&argv).assert_ok("journalctl").stdout
    }

    /// Host path of `path` inside the node (whether running or not).
    pub fn host_path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// Writes a file into the node (owner root, `mode`), creating parent directories. Works
    /// before boot and while running. A symlink at `path` is replaced, never followed (it would
    /// point into the host).
    pub fn put_file(&self, path: &str, contents: &[u8], mode: u32) {
        let p = self.host_path(path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(&p).unwrap();
        }
        fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Contents of a file as the node sees it (through its mounts and symlinks). Panics if
    /// it can't be read.
    pub fn read_file(&self, path: &str) -> String {
        self.exec(&["cat", path])
            .assert_ok(&format!("cat {path} on {}", self.name))
            .stdout
    }

    /// Whether `path` exists inside the node.
    pub fn exists(&self, path: &str) -> bool {
        self.exec(&["test", "-e", path]).success()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
        crate::cleanup::remove_tree(&self.home);
    }
}

/// systemd expands `$VAR`/`${VAR}` in a unit's command line (systemd-run in bookworm has no
/// `--expand-environment=no`), so `sh -c 'echo ${#x}'` would arrive mangled. `$$` is a literal `$`.
fn literal(arg: &str) -> String {
    arg.replace('$', "$$")
}

/// A child of `parent` whose command name is `comm` (the container's PID 1 is nspawn's child).
fn find_child(parent: u32, comm: &str) -> Option<u32> {
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid …": comm may contain spaces, so split at the last ')'.
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head.split_once('(').map(|x| x.1).unwrap_or("");
        let ppid = tail
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && name == comm {
            return Some(pid);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn dollars_reach_the_shell_literally() {
        assert_eq!(super::literal("echo ${#x} $y"), "echo $${#x} $$y");
    }
}
