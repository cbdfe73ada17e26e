//! Running host commands: with a timeout, captured output, and loud failures.
//!
//! Every helper here either returns what the caller asked for or panics with the full command
//! line and its output, so a failing test explains itself.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// What a finished command produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Exit code; `-1` when it was killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl RunResult {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Panics with the whole output unless the command exited 0; `what` names it in the message.
    #[track_caller]
    pub fn assert_ok(self, what: &str) -> Self {
        if self.code != 0 {
            panic!("{what}: exit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.code, self.stdout, self.stderr);
        }
        self
    }
}

/// Human-readable command line, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion, feeding `stdin`, capturing output, killing it after `timeout`.
/// Panics only if it can't be started or times out; a non-zero exit is returned, not a panic.
#[track_caller]
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> RunResult {
    let line = describe(cmd);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start `{line}`: {e}"));
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let data = data.to_vec();
        // A writer thread, so a child that doesn't read its stdin can't deadlock us.
        thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let out = reader(child.stdout.take().unwrap());
    let err = reader(child.stderr.take().unwrap());
    let code = match wait_timeout(&mut child, timeout) {
        Some(code) => code,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let (o, e) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
            panic!("`{line}` timed out after {timeout:?}\n--- stdout ---\n{o}\n--- stderr ---\n{e}");
        }
    };
    RunResult { code, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
}

/// `run` with no stdin, asserting success, returning stdout.
#[track_caller]
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> String {
    let line = describe(cmd);
    run(cmd, None, timeout).assert_ok(&line).stdout
}

fn reader(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Waits for `child` at most `timeout`; `None` if it is still running. Never panics.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status.code().unwrap_or(-1)),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// Stops a child we started: SIGTERM, then SIGKILL after `grace`. Never panics (used in Drop).
pub fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: plain kill(2) on the pid of our own, not yet reaped, child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    if wait_timeout(child, grace).is_none() {
        eprintln!("[vm-tests] pid {} ignored SIGTERM for {grace:?}; sending SIGKILL", child.id());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll(timeout, f).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `f` every 50 ms until it returns `Some`; `None` after `timeout`.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Last `n` lines of a text file (for diagnostics in panic messages).
pub fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A `Command` for a host tool by its full path, so a `$PATH` without `/usr/sbin` (common when
/// tests run under sudo or CI runners) can't make a present tool look missing.
pub fn host(program: &str) -> Command {
    Command::new(crate::preconditions::find_in_path(program).unwrap_or_else(|| program.into()))
}
