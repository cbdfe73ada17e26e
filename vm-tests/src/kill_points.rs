//! SIGKILL at chosen points of a run. A timer lands where the time goes (nine times in ten
//! inside `apt-get`); these land where the tool does its own work: `strace` on the node counts
//! the run's main-thread system calls of one family and kills the process at the Nth, before
//! the call is carried out. A rename is a file going live (a managed file, the notification
//! queue, the report); a clone is a child process (validator, `nft`, a reload, `apt-get`) being
//! started, or a thread reading one that runs; a write is a file's bytes (or a line of output)
//! on their way.
//!
//! Only the main thread is traced (no `-f`): the engine applies there, plans made ahead on
//! other threads don't count, and children run at full speed, untraced. The run is a unit of
//! its own whose stop kills only its main process, as `kill -9` from a shell would: what the
//! kill leaves behind stays visible (`leftovers`).

use std::time::Duration;

use crate::{cmd, Node, RunOpts};

/// Where the run is killed: the Nth call (from 1) of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    Rename(u32),
    Clone(u32),
    Write(u32),
}

impl At {
    fn calls(self) -> &'static str {
        match self {
            At::Rename(_) => RENAMES,
            At::Clone(_) => CLONES,
            At::Write(_) => WRITES,
        }
    }

    fn nth(self) -> u32 {
        match self {
            At::Rename(n) | At::Clone(n) | At::Write(n) => n,
        }
    }
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::Rename(n) => write!(f, "rename #{n}"),
            At::Clone(n) => write!(f, "clone #{n}"),
            At::Write(n) => write!(f, "write #{n}"),
        }
    }
}

const RENAMES: &str = "rename,renameat,renameat2";
const CLONES: &str = "clone,clone3,fork,vfork";
const WRITES: &str = "write,pwrite64,writev,pwritev,pwritev2";
const TRACE: &str = "/run/bt-kill.trace";

/// How many calls of each family a run's main thread makes.
#[derive(Clone, Copy, Debug)]
pub struct Calls {
    pub renames: u32,
    pub clones: u32,
    pub writes: u32,
}

/// The calls the main thread of a run of `argv` makes; the run goes to its end (traced, not
/// killed). Returns them with the run's exit code.
pub fn count(node: &Node, argv: &[&str], opts: &RunOpts) -> (Calls, i32) {
    let trace = format!("trace={RENAMES},{CLONES},{WRITES}");
    let mut line = vec!["strace", "-qq", "-o", TRACE, "-e", &trace, "--"];
    line.extend_from_slice(argv);
    let r = node.run_opts(&line, opts);
    let log = node.read_file(TRACE);
    let of =
        |calls: &str| log.lines().filter(|l| calls.split(',').any(|c| l.starts_with(&format!("{c}(")))).count() as u32;
    (Calls { renames: of(RENAMES), clones: of(CLONES), writes: of(WRITES) }, r.code)
}

/// What a killed run left to see.
pub struct Killed {
    /// Whether the kill happened (a run that made fewer calls than `at` ends by itself).
    pub killed: bool,
    /// The call it was killed at, as strace shows it, and the run's last line of output.
    pub landed: String,
    pub unit: String,
}

/// Runs `argv` as unit `unit`, killed at `at`.
pub fn run_killed(node: &Node, unit: &str, argv: &[&str], at: At, opts: &RunOpts) -> Killed {
    let trace = format!("trace={}", at.calls());
    let inject = format!("inject={}:signal=KILL:when={}", at.calls(), at.nth());
    let unit_arg = format!("--unit={unit}");
    let env: Vec<String> = opts.env.iter().map(|(k, v)| format!("--setenv={k}={v}")).collect();
    let mut line = vec!["systemd-run", "--wait", "--pipe", "--quiet", "--collect", &unit_arg];
    line.extend(env.iter().map(String::as_str));
    line.extend_from_slice(&["-p", "KillMode=process", "--", "strace", "-qq", "-o", TRACE, "-e", &trace]);
    line.extend_from_slice(&["-e", &inject, "--"]);
    line.extend_from_slice(argv);
    let r = node.run_opts(&line, &RunOpts { env: Vec::new(), ..opts.clone() });
    let log = node.read_file(TRACE);
    let killed = log.contains("+++ killed by SIGKILL");
    let call = log.lines().rfind(|l| !l.starts_with("+++") && !l.starts_with("---")).unwrap_or("");
    let what = match at {
        // The target's file name: `renameat(…, "/proc/self/fd/9/.x.bootstrap-tmp-…", …, "/proc/self/fd/9/x")`.
        At::Rename(_) => {
            let target = call.rsplit('"').nth(1).unwrap_or("?");
            format!("{} going live", target.rsplit('/').next().unwrap_or(target))
        }
        At::Clone(_) => "a child process or its reader starting".to_string(),
        At::Write(_) => format!("writing to fd {}", call.split(['(', ',']).nth(1).unwrap_or("?")),
    };
    // The last state the run finished: its output's heading lines (`✓ id kind target`) start
    // at the first column, the changes below them are indented.
    let last = r
        .stdout
        .lines()
        .rfind(|l| l.starts_with(['✓', '✗', '~', '=']) || l.starts_with("- "))
        .map_or("none".to_string(), |l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
    Killed { killed, landed: format!("{what} (the last state done: {last})"), unit: format!("{unit}.service") }
}

/// The processes still in the killed run's unit once `grace` has passed (children that should
/// have died with it), as `pid args` lines.
pub fn leftovers(node: &Node, killed: &Killed, grace: Duration) -> Vec<String> {
    let list = || {
        let ps = node.exec(&["ps", "-eo", "unit=,pid=,args="]).stdout;
        ps.lines()
            .filter(|l| l.split_whitespace().next() == Some(killed.unit.as_str()))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
    };
    cmd::poll(grace, || Some(list()).filter(Vec::is_empty)).unwrap_or_else(list)
}
