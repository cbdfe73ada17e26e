//! Powering a node on and off: nspawn in its own cgroup, waiting for systemd to settle, poweroff, reboot.

use super::{Node, RunOpts};
use crate::cmd;
use crate::network::BRIDGE;
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long a clean poweroff may take before nspawn is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// How long a boot may take to reach a settled state.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

impl Node {
    /// Boots the container from its tree and waits for systemd to settle.
    pub fn start(&mut self) {
        assert!(self.nspawn.is_none(), "node {} is already running", self.name);
        let console = File::options().create(true).append(true).open(self.console_path()).unwrap();
        let mut c = self.lab.netns.command("systemd-nspawn");
        // --register=no --keep-unit: there is no systemd/machined on the host to talk to.
        c.args(["--register=no", "--keep-unit", "--boot", "--quiet"])
            .arg(format!("--directory={}", self.root.display()))
            .arg(format!("--machine={}", self.machine))
            .arg(format!("--hostname={}", self.name))
            .arg(format!("--network-bridge={BRIDGE}"))
            .arg(format!("--bind-ro={}:/srv/repo", self.lab.repo.display()))
            // We write resolv.conf/timezone ourselves; the journal stays inside the container.
            .args(["--console=read-only", "--resolv-conf=off", "--timezone=off", "--link-journal=no"])
            .args(&self.nspawn_args)
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console);
        self.cgroup.ensure();
        let cgroup = self.cgroup.enter_fn();
        // SAFETY: the closure only makes async-signal-safe syscalls (see Cgroup).
        unsafe { c.pre_exec(cgroup) };
        let t = Instant::now();
        let child =
            c.spawn().unwrap_or_else(|e| panic!("cannot start systemd-nspawn (or move it into its cgroup): {e}"));
        let nspawn_pid = child.id();
        self.nspawn = Some(child);
        // From here, a panic drops `self`, which stops the container.
        self.pid1 = cmd::wait_for("the container's systemd to start", Duration::from_secs(30), || {
            if let Some(code) = self.nspawn.as_mut().unwrap().try_wait().ok().flatten().map(|s| s.code()) {
                panic!(
                    "systemd-nspawn for {} exited early ({code:?}):\n{}",
                    self.name,
                    cmd::tail(&self.console_path(), 30)
                );
            }
            find_child(nspawn_pid, "systemd")
        });
        self.wait_until_running();
        eprintln!("[timing] boot {}: {:.2}s", self.name, t.elapsed().as_secs_f64());
    }

    /// Waits for `systemctl is-system-running` to settle; panics with the failed units and the
    /// boot's warnings unless it says `running`.
    fn wait_until_running(&self) {
        // systemd's bus socket appears a moment after PID 1 starts; until then systemctl
        // prints nothing or `offline` (it can't reach systemd), so retry until it reports a
        // real state (and --wait then waits for settling).
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let state = loop {
            let r = self
                .exec_opts(&["systemctl", "is-system-running", "--wait"], &RunOpts::default().timeout(BOOT_TIMEOUT));
            let said = r.stdout.trim();
            if (!said.is_empty() && said != "offline") || Instant::now() > deadline {
                break r;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if state.stdout.trim() != "running" {
            let failed = self.exec(&["systemctl", "--failed", "--no-pager"]);
            let errors = self.exec(&["journalctl", "--no-pager", "-b", "-p", "warning", "-n", "40"]);
            panic!(
                "node {} did not boot cleanly: system state {:?} {}\n{}\n--- journal (warnings) ---\n{}",
                self.name,
                state.stdout.trim(),
                state.stderr.trim(),
                failed.stdout,
                errors.stdout
            );
        }
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

    /// Pulls the plug: SIGKILL to the container's PID 1 ends its PID namespace at once (no
    /// shutdown, its network gone with it), as a crashed machine would.
    pub fn kill(&mut self) {
        if self.pid1 != 0 {
            // SAFETY: plain kill(2) on the container's init, found as our nspawn child's child.
            unsafe { libc::kill(self.pid1 as libc::pid_t, libc::SIGKILL) };
        }
        self.shutdown();
    }

    /// Powers off and boots again from the same tree (~3 s); state on disk is kept.
    pub fn reboot(&mut self) {
        let t = Instant::now();
        self.shutdown();
        self.start();
        eprintln!("[timing] reboot {}: {:.2}s", self.name, t.elapsed().as_secs_f64());
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.nspawn.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
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
        let ppid = tail.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && name == comm {
            return Some(pid);
        }
    }
    None
}
