//! The one way to run a child process: logged command line, a timeout, secrets only on stdin.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use wait_timeout::ChildExt;

use crate::engine::children;

/// A command to run. Arguments are logged, so they must never hold a secret: secrets go in
/// `stdin` (or in a 0600 file whose path is an argument).
#[derive(Clone, Debug)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
    pub timeout: Duration,
}

impl Cmd {
    pub fn new(program: impl Into<String>) -> Self {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            timeout: Duration::from_secs(120),
        }
    }

    /// A command from an argv list, as given in a role (`validate = ["haproxy", "-c", "-f", "{}"]`).
    pub fn from_argv(argv: &[String]) -> Result<Self> {
        let (program, args) = argv.split_first().ok_or_else(|| anyhow!("empty command"))?;
        Ok(Cmd::new(program.clone()).args(args.iter().cloned()))
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args(mut self, a: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Bytes for the child's standard input: the channel for secrets.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The command line as logged and shown: program and arguments, never stdin.
    pub fn display(&self) -> String {
        let mut parts = vec![self.program.as_str()];
        parts.extend(self.args.iter().map(String::as_str));
        shell_words::join(parts)
    }
}

#[derive(Clone, Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Standard error, or standard output when that is empty, trimmed: what a tool said.
    pub fn message(&self) -> &str {
        let e = self.stderr.trim();
        if e.is_empty() {
            self.stdout.trim()
        } else {
            e
        }
    }
}

/// Runs child processes. Tests substitute their own.
pub trait Runner: Send + Sync {
    fn run(&self, cmd: &Cmd) -> Result<Output>;

    /// Whether this runner is the system itself, so an observation may skip the child process
    /// and ask a daemon's socket directly (PostgreSQL, the system bus). A substitute says no:
    /// what it fakes is the tools.
    fn is_system(&self) -> bool {
        false
    }

    /// Run and fail unless the exit code is 0, with the tool's own message.
    fn check(&self, cmd: &Cmd) -> Result<Output> {
        let out = self.run(cmd)?;
        if !out.success() {
            let code = out.code.map_or("a signal".to_string(), |c| c.to_string());
            return Err(anyhow!("`{}` failed (exit {code}): {}", cmd.display(), out.message()));
        }
        Ok(out)
    }
}

/// The real runner: each child in its own process group, killed as a group on timeout, and
/// sent SIGTERM when the run dies (a SIGKILLed run must not leave `apt-get` or `psql` going on
/// beside the next one). The signal reaches the child itself, not what it started: dpkg under
/// apt-get finishes its step and holds its lock, which the next run's apt-get waits for (and a
/// package left unconfigured is configured then, see `apt`); a validator's shell should `exec`
/// its last command. What is left of the group, the next run waits for (`children`).
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn is_system(&self) -> bool {
        true
    }

    fn run(&self, cmd: &Cmd) -> Result<Output> {
        tracing::debug!(command = %cmd.display(), "run");
        let mut command = Command::new(&cmd.program);
        command
            .args(&cmd.args)
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdin(if cmd.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let parent = nix::unistd::getpid();
        // SAFETY: prctl and getppid are async-signal-safe system calls; nothing is allocated.
        // The signal follows the thread that forks, and this thread waits for the child.
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
                // The run died between the fork and the prctl: no signal would come.
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let mut child = command.spawn().with_context(|| format!("cannot run `{}`", cmd.display()))?;
        // Its group, for the next run to wait for should this one be killed (removed on drop,
        // after the wait).
        let _record = children::record(child.id(), || cmd.display());
        let writer = child.stdin.take().zip(cmd.stdin.clone()).map(|(mut pipe, bytes)| {
            thread::spawn(move || {
                // A child that exits without reading its input is not our error.
                let _ = pipe.write_all(&bytes);
            })
        });
        let stdout = reader(child.stdout.take());
        let stderr = reader(child.stderr.take());
        let status = match child.wait_timeout(cmd.timeout)? {
            Some(s) => s,
            None => {
                let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                return Err(anyhow!(
                    "`{}` did not finish within {}s and was killed",
                    cmd.display(),
                    cmd.timeout.as_secs()
                ));
            }
        };
        if let Some(w) = writer {
            let _ = w.join();
        }
        Ok(Output {
            code: status.code(),
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        })
    }
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_stdin_and_captures_output() {
        let out = SystemRunner.run(&Cmd::new("sh").args(["-c", "cat; echo err >&2"]).stdin("hi")).unwrap();
        assert_eq!(out.stdout, "hi");
        assert_eq!(out.stderr.trim(), "err");
        assert!(out.success());
    }

    #[test]
    fn kills_on_timeout() {
        let cmd = Cmd::new("sleep").arg("30").timeout(Duration::from_millis(200));
        let err = SystemRunner.run(&cmd).unwrap_err().to_string();
        assert!(err.contains("did not finish"), "{err}");
    }

    /// Not a test of its own: the child `a_child_dies_with_its_run` starts and kills.
    #[test]
    #[ignore]
    fn run_a_long_child() {
        if let Ok(file) = std::env::var("RUNNER_TEST_PID_FILE") {
            let script = format!("echo $$ > {file}; exec sleep 30");
            let _ = SystemRunner.run(&Cmd::new("sh").args(["-c", &script]));
        }
    }

    #[test]
    fn a_child_dies_with_its_run() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pid");
        let mut run = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "engine::runner::tests::run_a_long_child", "--nocapture"])
            .env("RUNNER_TEST_PID_FILE", &file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&file).ok().and_then(|t| t.trim().parse::<i32>().ok()) {
                break nix::unistd::Pid::from_raw(pid);
            }
            assert!(started.elapsed() < Duration::from_secs(20), "the child never started");
            thread::sleep(Duration::from_millis(20));
        };
        run.kill().unwrap(); // SIGKILL: no chance to clean up
        run.wait().unwrap();
        let gone = (0..100).any(|_| {
            thread::sleep(Duration::from_millis(20));
            nix::sys::signal::kill(pid, None).is_err()
        });
        if !gone {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        assert!(gone, "the child outlived its killed run");
    }

    #[test]
    fn check_reports_the_tools_message() {
        let err = SystemRunner.check(&Cmd::new("sh").args(["-c", "echo bad config >&2; exit 3"]));
        let msg = err.unwrap_err().to_string();
        assert!(msg.contains("exit 3") && msg.contains("bad config"), "{msg}");
    }
}
