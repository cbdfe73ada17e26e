//! Driving a command through a real terminal, for prompts that refuse to read a pipe (secret
//! prompts without echo). A thin wrapper over `rexpect` whose failures panic with what the
//! terminal showed, so a test's failure message explains itself.

use rexpect::process::WaitStatus;
use rexpect::session::{spawn_command, PtySession};
use std::process::Command;
use std::time::Duration;

pub struct Pty {
    session: PtySession,
    what: String,
}

impl Pty {
    /// Starts `cmd` on a new pseudo-terminal; `timeout` bounds each `expect`.
    pub fn spawn(cmd: Command, timeout: Duration) -> Pty {
        let what = crate::cmd::describe(&cmd);
        let session = spawn_command(cmd, Some(timeout.as_millis() as u64))
            .unwrap_or_else(|e| panic!("cannot start `{what}` on a pty: {e}"));
        Pty { session, what }
    }

    /// Waits until `needle` appears; returns what was printed before it.
    #[track_caller]
    pub fn expect(&mut self, needle: &str) -> String {
        self.session.exp_string(needle).unwrap_or_else(|e| panic!("`{}`: expected {needle:?}: {e}", self.what))
    }

    /// Waits until `regex` matches; returns (text before, matched text).
    #[track_caller]
    pub fn expect_regex(&mut self, regex: &str) -> (String, String) {
        self.session.exp_regex(regex).unwrap_or_else(|e| panic!("`{}`: expected /{regex}/: {e}", self.what))
    }

    /// Types `line` and Enter.
    pub fn send_line(&mut self, line: &str) {
        self.session.send_line(line).unwrap_or_else(|e| panic!("`{}`: send: {e}", self.what));
        self.session.flush().unwrap();
    }

    /// Types `text` without Enter.
    pub fn send(&mut self, text: &str) {
        self.session.send(text).unwrap_or_else(|e| panic!("`{}`: send: {e}", self.what));
        self.session.flush().unwrap();
    }

    /// Sends a control character, e.g. `'c'` for Ctrl-C, `'d'` for Ctrl-D.
    pub fn send_control(&mut self, c: char) {
        self.session.send_control(c).unwrap_or_else(|e| panic!("`{}`: send ^{c}: {e}", self.what));
    }

    /// Reads until the program ends; returns (exit code, remaining output).
    #[track_caller]
    pub fn wait(mut self) -> (i32, String) {
        let rest =
            self.session.exp_eof().unwrap_or_else(|e| panic!("`{}`: expected the end of the program: {e}", self.what));
        let code = match self.session.process().wait() {
            Ok(WaitStatus::Exited(_, code)) => code,
            Ok(other) => panic!("`{}` ended abnormally: {other:?}", self.what),
            Err(e) => panic!("`{}`: wait: {e}", self.what),
        };
        (code, rest)
    }
}
