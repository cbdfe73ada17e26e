//! A fake command runner for apply tests: records every command and answers from a script, so
//! tests can check exactly which processes a module would start, without starting any.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use states::engine::runner::{Cmd, Output, Runner};
use states::Context;

type Respond = Box<dyn Fn(&Cmd) -> Output + Send + Sync>;

pub struct FakeRunner {
    log: Arc<Mutex<Vec<Cmd>>>,
    respond: Respond,
}

impl Runner for FakeRunner {
    fn run(&self, cmd: &Cmd) -> anyhow::Result<Output> {
        self.log.lock().unwrap().push(cmd.clone());
        Ok((self.respond)(cmd))
    }
}

/// What the test reads back: every command run, in order.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Cmd>>>);

impl Log {
    pub fn cmds(&self) -> Vec<Cmd> {
        self.0.lock().unwrap().clone()
    }

    /// Each command as one line (`program arg…`).
    pub fn lines(&self) -> Vec<String> {
        self.cmds().iter().map(Cmd::display).collect()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

pub fn ok() -> Output {
    Output { code: Some(0), stdout: String::new(), stderr: String::new() }
}

pub fn fail(code: i32, stderr: &str) -> Output {
    Output { code: Some(code), stdout: String::new(), stderr: stderr.into() }
}

/// A context on `root` whose runner answers with `respond` and records into the returned log.
pub fn cx(root: &Path, respond: impl Fn(&Cmd) -> Output + Send + Sync + 'static) -> (Context, Log) {
    let log = Log::default();
    let mut cx = crate::support::cx(root);
    cx.runner = Box::new(FakeRunner { log: log.0.clone(), respond: Box::new(respond) });
    (cx, log)
}
