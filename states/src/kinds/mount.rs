//! `mount`: a network filesystem mounted by a systemd mount unit the state writes, enabled at
//! boot, mounted now, and answering.
//!
//! ```toml
//! [[state]]
//! id = "share-mount"
//! type = "mount"
//! path = "/srv/share/uploads"                  # the unit is named after it
//! what = "share@198.18.0.10:/uploads"
//! fstype = "fuse.sshfs"
//! options = ["reconnect", "ServerAliveInterval=5"]  # `_netdev,nosuid,nodev` always come first
//! description = "Shared volume uploads"
//! hint = "a new client is authorized at the storage node's next run"  # said when a mount fails
//! ```
//!
//! Plan compares the unit file (a diff), asks systemd whether the unit is enabled and mounted
//! (the run's one shared look at units), and looks at the mounted directory with a time limit:
//! a mount whose daemon died (`Transport endpoint is not connected`, an I/O error) is drift,
//! and is mounted again; one that is only slow (no answer in `PROBE`) is left to reconnect. A boot without the server
//! does not hang: the unit gives up after `TimeoutSec`, and the next run mounts it.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::Deserialize;

use crate::engine::build::{display, managed_path, params, Builder};
use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State, Thing};
use crate::engine::runner::Cmd;
use crate::files::conf_file::ConfFile;
use crate::sys::systemd;

/// How long the mounted directory may take to answer.
pub const PROBE: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    path: PathBuf,
    what: String,
    fstype: String,
    #[serde(default)]
    options: Vec<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    hint: String,
}

pub struct MountState {
    path: PathBuf,
    unit: String,
    file: ConfFile,
    hint: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Enable,
    Start,
    /// The unit file changed under a mounted unit.
    Restart,
    /// The mount stopped answering.
    Remount,
}

pub fn build(t: toml::Table, b: &mut Builder) -> Result<Box<dyn State>> {
    let p: Params = params(t)?;
    let path = managed_path(&p.path)?;
    if path == Path::new("/") {
        bail!("`path` can't be /");
    }
    let one_line = |what: &str, v: &str| {
        if v.is_empty() || v.chars().any(|c| c.is_control() || c.is_whitespace()) {
            bail!("`{what}` `{v}` must be one word, without spaces");
        }
        Ok(())
    };
    one_line("what", &p.what)?;
    one_line("fstype", &p.fstype)?;
    for o in &p.options {
        one_line("options", o)?;
        if o.contains(',') {
            bail!("`options`: `{o}` holds a comma; give each option as its own item");
        }
    }
    if p.description.chars().any(char::is_control) {
        bail!("`description` must be one line");
    }
    let unit = format!("{}.mount", escape_path(&path));
    // Never a set-id program or a device from a network filesystem: whoever writes there (a
    // local user through the mount, the server) must not get root on this node by it.
    let always = ["_netdev", "nosuid", "nodev"];
    let mut options: Vec<String> = always.iter().map(|o| o.to_string()).collect();
    options.extend(p.options.iter().filter(|o| !always.contains(&o.as_str())).cloned());
    let description = if p.description.is_empty() { format!("{} on {}", p.what, display(&path)) } else { p.description };
    let text = format!(
        "# Written by bootstrap (state `{id}`): edits are replaced on the next run.\n\
         [Unit]\nDescription={description}\nWants=network-online.target\nAfter=network-online.target\n\n\
         [Mount]\nWhat={what}\nWhere={where_}\nType={fstype}\nOptions={options}\n\
         # Without the server a boot waits this long, not forever; the next run mounts it.\nTimeoutSec=20\n\n\
         [Install]\nWantedBy=remote-fs.target\n",
        id = b.id,
        what = p.what,
        where_ = display(&path),
        fstype = p.fstype,
        options = options.join(","),
    );
    systemd::register(b.cx, &unit);
    let file = ConfFile { path: PathBuf::from("/etc/systemd/system").join(&unit), bytes: text.into_bytes() };
    Ok(Box::new(MountState { path, unit, file, hint: p.hint }))
}

/// The unit name systemd gives a mount point (`systemd-escape --path`): `/srv/share/a-b`
/// becomes `srv-share-a\x2db`.
pub fn escape_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    let trimmed = text.trim_matches('/');
    let mut out = String::new();
    for (i, b) in trimmed.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'.' => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if out.is_empty() {
        "-".into()
    } else {
        out
    }
}

/// What a look at the mounted directory found.
enum Probe {
    Answers,
    /// The filesystem's daemon is gone (`Transport endpoint is not connected`) or it fails
    /// with an I/O error: only a new mount brings it back.
    Dead(String),
    /// No answer within `PROBE`.
    Slow,
}

/// Looks at the mounted directory from a thread, so a hung filesystem costs `PROBE`, not the run.
fn probe(dir: &Path) -> Probe {
    let (tx, rx) = mpsc::channel();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read_dir(&dir).map(drop));
    });
    match rx.recv_timeout(PROBE) {
        Ok(Ok(())) => Probe::Answers,
        Ok(Err(e)) if matches!(e.raw_os_error(), Some(libc::ENOTCONN) | Some(libc::EIO)) => Probe::Dead(e.to_string()),
        // Another error (permissions) is not the mount's health.
        Ok(Err(_)) => Probe::Answers,
        Err(_) => Probe::Slow,
    }
}

impl MountState {
    /// A failed mount with what the filesystem said (systemctl only says "see the journal"):
    /// `Permission denied (publickey)`, `Host key verification failed`, a timeout.
    fn why(&self, cx: &Context, e: anyhow::Error) -> anyhow::Error {
        let journal = Cmd::new("journalctl").args(["-u", &self.unit, "-n", "12", "-o", "cat", "--no-pager"]);
        let e = if self.hint.is_empty() { e } else { e.context(self.hint.clone()) };
        let Ok(out) = cx.runner.run(&journal) else { return e };
        // What the filesystem's own tools said, not systemd's lines about the unit.
        let ours = |l: &&str| !l.is_empty() && !l.starts_with(&format!("{}:", self.unit)) && !l.starts_with("Failed to mount") && !l.starts_with("Mounting ");
        let said: Vec<&str> = out.stdout.lines().map(str::trim).filter(ours).collect();
        match said.len() {
            0 => e,
            n => e.context(format!("mounting {} failed: {}", display(&self.path), said[n.saturating_sub(3)..].join(" / "))),
        }
    }
}

impl State for MountState {
    fn claims(&self) -> Vec<Claim> {
        vec![Claim::path(&self.file.path), Claim::new(Thing::Unit(self.unit.clone()))]
    }

    fn target(&self) -> String {
        format!("{} ({})", display(&self.path), self.unit)
    }

    fn service_unit(&self) -> Option<&str> {
        Some(&self.unit)
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        cx.require_live("mounts")?;
        let mut plan = Plan { changes: self.file.plan(cx)? };
        let rewritten = !plan.changes.is_empty();
        let st = systemd::status(cx, &self.unit)?;
        let loaded = st.load_state == "loaded";
        if loaded && st.unit_file_state != "enabled" {
            plan.push(Change::new(format!("enable at boot (is {})", st.unit_file_state), Op::Enable));
        } else if !loaded {
            plan.push(Change::new("enable at boot", Op::Enable));
        }
        let mounted = loaded && matches!(st.active_state.as_str(), "active" | "reloading");
        if !mounted {
            let now = if loaded { format!("{}/{}", st.active_state, st.sub_state) } else { "not loaded".into() };
            plan.push(Change::new(format!("mount (is {now})"), Op::Start));
        } else if rewritten {
            plan.push(Change::new("mount again with the new unit", Op::Restart));
        } else {
            match probe(&cx.path(&self.path)) {
                Probe::Answers => {}
                Probe::Dead(why) => plan.push(Change::new(format!("mount again: it is dead ({why})"), Op::Remount)),
                // A server that is slow or away for a moment: the filesystem reconnects by
                // itself, and a remount now would leave the bare directory in its place.
                Probe::Slow => {
                    let shown = display(&self.path);
                    tracing::warn!("{shown} does not answer within {PROBE:?}; leaving it to reconnect")
                }
            }
        }
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        let result = (|| {
            if plan.changes.iter().any(|c| c.op::<Op>().is_none()) {
                self.file.apply(cx, plan)?;
                cx.runner.check(&Cmd::new("systemctl").arg("daemon-reload"))?;
            }
            for op in plan.ops::<Op>() {
                let systemctl = |verb: &str| cx.runner.check(&Cmd::new("systemctl").args([verb, &self.unit])).map(drop);
                match op {
                    Op::Enable => systemctl("enable")?,
                    Op::Start => systemctl("start").map_err(|e| self.why(cx, e))?,
                    Op::Restart => systemctl("restart").map_err(|e| self.why(cx, e))?,
                    Op::Remount => {
                        // A FUSE mount whose daemon died can't be unmounted cleanly: detach it,
                        // then let the unit mount it afresh.
                        let _ = cx.runner.run(&Cmd::new("umount").args(["-l", &display(&self.path)]));
                        systemctl("restart").map_err(|e| self.why(cx, e))?;
                    }
                }
            }
            Ok(())
        })();
        // Also after a failure: part of it may have happened.
        systemd::invalidate(cx);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_as_systemd_escape_makes_them() {
        assert_eq!(escape_path(Path::new("/srv/share/uploads")), "srv-share-uploads");
        assert_eq!(escape_path(Path::new("/srv/my-share/a b")), "srv-my\\x2dshare-a\\x20b");
        assert_eq!(escape_path(Path::new("/.hidden/x")), "\\x2ehidden-x");
    }
}
