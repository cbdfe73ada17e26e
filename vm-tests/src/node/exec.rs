//! Running commands in a node: as a transient unit, directly in its namespaces, or on a terminal.

use super::Node;
use crate::cmd::{self, RunResult};
use crate::pty::Pty;
use std::process::Command;
use std::time::Duration;

/// Options for one command run inside a node.
#[derive(Clone, Debug)]
pub struct RunOpts {
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
}

impl Default for RunOpts {
    fn default() -> Self {
        RunOpts { env: Vec::new(), stdin: None, timeout: Duration::from_secs(600) }
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

impl Node {
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
        c.args(["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"]);
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
        assert!(opts.stdin.is_none(), "a pty session takes its input through send_line");
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
}

/// systemd expands `$VAR`/`${VAR}` in a unit's command line (systemd-run in bookworm has no
/// `--expand-environment=no`), so `sh -c 'echo ${#x}'` would arrive mangled. `$$` is a literal `$`.
fn literal(arg: &str) -> String {
    arg.replace('$', "$$")
}

#[cfg(test)]
mod tests {
    #[test]
    fn dollars_reach_the_shell_literally() {
        assert_eq!(super::literal("echo ${#x} $y"), "echo $${#x} $$y");
    }
}
