//! What a killed run left going. The runner's parent-death signal reaches each child, not what
//! the child started (a validator's shell that did not `exec`, a maintainer script under dpkg,
//! runuser's child), and the lock is free as soon as the run dies. So each child's process
//! group is recorded while it runs (`CHILDREN_DIR/<pgid>`: the leader's start time and the
//! run's session, then the command line as shown, which never holds a secret), and the next
//! run, once it holds the lock, waits for the groups still there, then ends what remains
//! (`take_over`).
//!
//! A pid is reused, so a record is believed only while it can still be ours: the process P is
//! alive with the recorded start time, or P is gone and some process of the run's session
//! still has the group P (the kernel reuses no pid while a group of that id exists, and a
//! group a service made since is in a session of its own).
//!
//! What is left is asked to end (SIGTERM, then SIGKILL), except a package install: dpkg killed
//! mid-step leaves packages half-configured, so it is left to finish (the next `apt-get` waits
//! for its lock).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// How long a run waits for the groups a killed run left before it kills them: a dpkg step or
/// a validator finishes well within it.
pub const WAIT: Duration = Duration::from_secs(60);

/// Where this process records its children, and its session; unset (tests, `--root`):
/// nowhere.
static RECORDS: OnceLock<(PathBuf, i32)> = OnceLock::new();

/// Once the run lock is held on a live node: make `dir` (root's only), settle what a killed
/// run left there, and record this run's children in it.
pub fn take_over(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // The records name groups to kill: the directory, and the one holding it, are this user's
    // only, and no link.
    for d in [dir, dir.parent().unwrap_or(dir)] {
        let m = fs::symlink_metadata(d).with_context(|| format!("cannot inspect {}", d.display()))?;
        if !m.is_dir() || m.uid() != nix::unistd::geteuid().as_raw() || m.mode() & 0o022 != 0 {
            bail!("{} is not a directory only this user can write: children are not recorded", d.display());
        }
    }
    sweep(dir, WAIT);
    record_in(dir);
    Ok(())
}

/// Record this process's children in `dir` from now on.
pub fn record_in(dir: &Path) {
    let session = nix::unistd::getsid(None).map_or(0, Pid::as_raw);
    let _ = RECORDS.set((dir.to_path_buf(), session));
}

/// A running child's record; removed when dropped, after the child was waited for.
pub(crate) struct Record(PathBuf);

impl Drop for Record {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Record the child `pid` (its own group's leader) running what `shown` says, when this
/// process records.
pub(crate) fn record(pid: u32, shown: impl FnOnce() -> String) -> Option<Record> {
    let (dir, session) = RECORDS.get()?;
    // Not waited for yet, so the pid is still this child's (a zombie at worst).
    let start = start_time(pid as i32)?;
    let path = dir.join(pid.to_string());
    let shown = shown();
    let written = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{start} {session}\n{shown}\n").as_bytes()));
    match written {
        Ok(()) => Some(Record(path)),
        Err(e) => {
            tracing::warn!("cannot record the child `{shown}` in {}: {e}", path.display());
            None
        }
    }
}

/// Wait up to `wait` for the recorded groups that are still ours, kill those left, and remove
/// every record.
pub fn sweep(dir: &Path, wait: Duration) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let mut left = Vec::new();
    // A run started by what a killed run left (its group) is not to wait for itself.
    let own = nix::unistd::getpgrp().as_raw();
    for e in entries.flatten() {
        let path = e.path();
        match Left::read(&path).filter(|l| l.pgid != own && l.ours() && l.running()) {
            Some(l) => {
                tracing::warn!("`{}` (process group {}) outlived a killed run: waiting for it", l.command, l.pgid);
                left.push((l, path));
            }
            None => drop(fs::remove_file(&path)),
        }
    }
    let deadline = Instant::now() + wait;
    loop {
        left.retain(|(l, path)| {
            let going = l.ours() && l.running();
            if !going {
                let _ = fs::remove_file(path);
            }
            going
        });
        let now = Instant::now();
        if left.is_empty() || now >= deadline {
            break;
        }
        thread::sleep((deadline - now).min(Duration::from_millis(100)));
    }
    for (l, path) in left {
        if l.installs_packages() {
            tracing::warn!(
                "`{}` (process group {}) outlived a killed run and still installs packages after {}s: left to finish (apt-get waits for its lock)",
                l.command,
                l.pgid,
                wait.as_secs()
            );
            let _ = fs::remove_file(path);
            continue;
        }
        tracing::warn!(
            "`{}` (process group {}) outlived a killed run and still ran after {}s: killed",
            l.command,
            l.pgid,
            wait.as_secs()
        );
        // Asked first, then made to: gone before this run goes on, with the locks it held.
        for (signal, grace) in [(Signal::SIGTERM, Duration::from_secs(5)), (Signal::SIGKILL, Duration::from_secs(5))] {
            if !(l.ours() && l.running()) {
                break;
            }
            let _ = killpg(Pid::from_raw(l.pgid), signal);
            let t = Instant::now();
            while l.running() && t.elapsed() < grace {
                thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = fs::remove_file(path);
    }
}

/// A recorded group.
struct Left {
    pgid: i32,
    start: u64,
    /// The session of the run that recorded it.
    session: i32,
    command: String,
}

impl Left {
    fn read(path: &Path) -> Option<Left> {
        let pgid = path.file_name()?.to_str()?.parse::<i32>().ok().filter(|&p| p > 1)?;
        let text = fs::read_to_string(path).ok()?;
        let (first, command) = text.split_once('\n')?;
        let (start, session) = first.split_once(' ')?;
        Some(Left {
            pgid,
            start: start.parse().ok()?,
            session: session.parse().ok()?,
            command: command.trim_end().to_string(),
        })
    }

    /// Still the group the record names (see the module's note on pid reuse).
    fn ours(&self) -> bool {
        match start_time(self.pgid) {
            Some(t) => t == self.start,
            None => members(self.pgid).any(|m| m.session == self.session),
        }
    }

    /// Some process of the group (of the run's session) is more than a zombie.
    fn running(&self) -> bool {
        members(self.pgid).any(|m| m.session == self.session && m.state != 'Z')
    }

    /// A member is dpkg or apt: killing it would leave packages half-configured.
    fn installs_packages(&self) -> bool {
        members(self.pgid)
            .any(|m| m.session == self.session && (m.name.starts_with("dpkg") || m.name.starts_with("apt")))
    }
}

/// What `/proc/PID/stat` says of a process.
struct Stat {
    name: String,
    state: char,
    pgrp: i32,
    session: i32,
    start: u64,
}

fn stat(pid: &str) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is in parentheses and may hold anything: fields start after the last `)`.
    let close = text.rfind(')')?;
    let name = text[text.find('(')? + 1..close].to_string();
    let mut f = text[close + 1..].split_whitespace();
    let state = f.next()?.chars().next()?;
    let pgrp = f.nth(1)?.parse().ok()?;
    let session = f.next()?.parse().ok()?;
    // Field 22 (starttime); `f` is now past field 6 (session).
    let start = f.nth(15)?.parse().ok()?;
    Some(Stat { name, state, pgrp, session, start })
}

/// When the process `pid` started (ticks since boot); `None` when there is no such process.
fn start_time(pid: i32) -> Option<u64> {
    stat(&pid.to_string()).map(|s| s.start)
}

/// The processes of the group `pgid`. Only after a killed run: a look at every process.
fn members(pgid: i32) -> impl Iterator<Item = Stat> {
    fs::read_dir("/proc").into_iter().flatten().flatten().filter_map(move |e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        stat(&name).filter(|s| s.pgrp == pgid)
    })
}

/// Whether a process of the group `pgid` runs (a zombie holds no lock and does nothing).
#[cfg(test)]
fn group_running(pgid: i32) -> bool {
    members(pgid).any(|m| m.state != 'Z')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::runner::{Cmd, Runner, SystemRunner};
    use std::process::{Command, Stdio};

    /// Not a test of its own: the run `a_killed_runs_grandchild_is_waited_for_then_killed`
    /// starts and kills.
    #[test]
    #[ignore]
    fn run_a_shell_that_does_not_exec() {
        let (Ok(dir), Ok(file)) = (std::env::var("CHILDREN_TEST_DIR"), std::env::var("CHILDREN_TEST_PID_FILE")) else {
            return;
        };
        record_in(Path::new(&dir));
        // A child that ended leaves no record.
        SystemRunner.check(&Cmd::new("true")).unwrap();
        let _ = SystemRunner.run(&Cmd::new("sh").args(["-c", &format!("echo $$ > {file}; sleep 30; true")]));
    }

    #[test]
    fn a_killed_runs_grandchild_is_waited_for_then_killed() {
        let t = tempfile::tempdir().unwrap();
        let (dir, file) = (t.path().join("children"), t.path().join("pid"));
        fs::create_dir(&dir).unwrap();
        let mut run = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "engine::children::tests::run_a_shell_that_does_not_exec"])
            .env("CHILDREN_TEST_DIR", &dir)
            .env("CHILDREN_TEST_PID_FILE", &file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let pgid = loop {
            let pid = fs::read_to_string(&file).ok().and_then(|t| t.trim().parse::<i32>().ok());
            if let Some(pid) = pid.filter(|p| dir.join(p.to_string()).exists()) {
                break pid;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "the child never started");
            thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "a finished child's record was left");
        let record = fs::read_to_string(dir.join(pgid.to_string())).unwrap();
        let start = start_time(pgid).unwrap();
        let session = nix::unistd::getsid(None).unwrap().as_raw();
        assert!(
            record.starts_with(&format!("{start} {session}\nsh -c ")) && record.ends_with("sleep 30; true'\n"),
            "{record}"
        );
        run.kill().unwrap(); // SIGKILL: no chance to clean up
        run.wait().unwrap();
        // The shell dies with its run; its `sleep` goes on.
        let t0 = Instant::now();
        while stat(&pgid.to_string()).is_some_and(|s| s.state != 'Z') && t0.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(20));
        }
        let outlived = group_running(pgid);
        let (wait, t1) = (Duration::from_millis(300), Instant::now());
        sweep(&dir, wait);
        let gone = !group_running(pgid);
        if !gone {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        assert!(outlived, "nothing of the group outlived its run: the test shows nothing");
        assert!(gone, "the grandchild outlived the sweep");
        assert!(t1.elapsed() >= wait, "the group was not waited for");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "the record was left");
    }

    #[test]
    fn a_record_of_a_reused_pid_is_dropped_and_its_process_left_alone() {
        let t = tempfile::tempdir().unwrap();
        let mut other = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = other.id() as i32;
        let start = start_time(pid).unwrap();
        // The pid, since reused: the process there started at another time.
        fs::write(t.path().join(pid.to_string()), format!("{} 1\nsleep 30\n", start + 1)).unwrap();
        let t0 = Instant::now();
        sweep(t.path(), Duration::from_secs(10));
        let alive = other.try_wait().unwrap().is_none();
        let _ = other.kill();
        let _ = other.wait();
        assert!(alive, "another process was killed");
        assert!(t0.elapsed() < Duration::from_secs(5), "another process was waited for");
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 0, "the record was left");
    }

    #[test]
    fn a_package_install_left_going_is_left_to_finish() {
        let t = tempfile::tempdir().unwrap();
        // A process named like dpkg, in a group of its own, as the runner starts children.
        let dpkg = t.path().join("dpkg");
        fs::copy("/bin/sleep", &dpkg).unwrap();
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(&dpkg).arg("30").process_group(0).spawn().unwrap();
        let pid = child.id() as i32;
        let session = nix::unistd::getsid(None).unwrap().as_raw();
        let dir = t.path().join("children");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(pid.to_string()), format!("{} {session}\napt-get install x\n", start_time(pid).unwrap()))
            .unwrap();
        sweep(&dir, Duration::from_millis(200));
        let alive = child.try_wait().unwrap().is_none();
        let _ = child.kill();
        let _ = child.wait();
        assert!(alive, "a package install was killed");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "the record was left");
    }
}
