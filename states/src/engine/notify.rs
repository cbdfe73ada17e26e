//! Reload/restart notifications: queued on disk before the change that needs them, cleared only
//! after they ran, so a failed or killed run replays them next time.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::engine::atomic;
use crate::engine::context::Context;
use crate::engine::runner::Cmd;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Reload,
    Restart,
}

/// `reload haproxy` or `restart postgresql`, as written in roles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub action: Action,
    pub service: String,
}

impl Notification {
    pub fn parse(s: &str) -> Result<Notification> {
        let (action, service) = s
            .split_once(' ')
            .ok_or_else(|| anyhow!("notify `{s}` must read \"reload SERVICE\" or \"restart SERVICE\""))?;
        let action = match action {
            "reload" => Action::Reload,
            "restart" => Action::Restart,
            other => bail!("notify `{s}`: unknown action `{other}` (reload or restart)"),
        };
        let service = service.trim();
        if service.is_empty() || service.contains(char::is_whitespace) {
            bail!("notify `{s}`: expected one service name");
        }
        Ok(Notification { action, service: service.to_string() })
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = match self.action {
            Action::Reload => "reload",
            Action::Restart => "restart",
        };
        write!(f, "{a} {}", self.service)
    }
}

/// Carries out a notification. The live one asks systemd; tests record.
pub trait Notifier {
    fn notify(&self, cx: &Context, n: &Notification) -> Result<()>;
}

/// `try-reload-or-restart` / `try-restart`: a service that is meant to be stopped stays stopped.
/// A unit whose file changed on disk is reloaded into systemd first (`daemon-reload`).
pub struct SystemdNotifier;

impl Notifier for SystemdNotifier {
    fn notify(&self, cx: &Context, n: &Notification) -> Result<()> {
        if !cx.is_live() {
            bail!("not run: states act on a tree ({}), not on this system", cx.root.display());
        }
        let verb = match n.action {
            Action::Reload => "try-reload-or-restart",
            Action::Restart => "try-restart",
        };
        // A unit file a state rewrote is read again first, or the restart would run the old one.
        let stale = cx.runner.run(&Cmd::new("systemctl").args([
            "show",
            "--property=NeedDaemonReload",
            "--value",
            n.service.as_str(),
        ]))?;
        if stale.success() && stale.stdout.trim() == "yes" {
            cx.runner.check(&Cmd::new("systemctl").arg("daemon-reload"))?;
        }
        cx.runner.check(&Cmd::new("systemctl").args([verb, n.service.as_str()]))?;
        Ok(())
    }
}

/// The on-disk queue. One entry per service; restart wins over reload.
pub struct PendingQueue {
    path: PathBuf,
    items: Vec<Notification>,
    /// The queue on disk could not be read as one: what it held is unknown.
    corrupt: bool,
    /// Where a copy of the corrupt queue was kept.
    aside: Option<PathBuf>,
}

/// Where a corrupt queue at `queue` is kept for a look.
fn aside_of(queue: &Path) -> PathBuf {
    queue.with_extension("json.corrupt")
}

impl PendingQueue {
    pub fn path(cx: &Context) -> PathBuf {
        cx.layout().pending_notifications()
    }

    /// The queue a killed or failed run left. One that can't be read (a disk fault, an edit, a
    /// directory in its place) must not stop every later run, firewall healing included: a
    /// copy is set aside when there is one to make (best effort; `dry`: none) and the queue
    /// starts empty and `corrupt`, for the run to fill with every notification its states can
    /// send (`owe_all`).
    pub fn load(cx: &Context, dry: bool) -> Result<PendingQueue> {
        let path = Self::path(cx);
        let corrupt = |path, aside| Ok(PendingQueue { path, items: Vec::new(), corrupt: true, aside });
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::from(&b"[]"[..]),
            Err(e) => {
                tracing::warn!("cannot read {}: {e}", path.display());
                return corrupt(path, None);
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(items) => Ok(PendingQueue { path, items, corrupt: false, aside: None }),
            Err(_) if dry => corrupt(path, None),
            Err(_) => {
                // Copied, not moved: the corrupt file stays the queue until `owe_all` replaced
                // it, so a run that dies in between leaves what it owes. The copy is for a look
                // only: a full disk must not stop the run.
                let to = Self::set_aside_path(cx);
                match atomic::write_plain(&to, &bytes, 0o600) {
                    Ok(()) => corrupt(path, Some(to)),
                    Err(e) => {
                        tracing::warn!("cannot set the corrupt {} aside: {e:#}", path.display());
                        corrupt(path, None)
                    }
                }
            }
        }
    }

    /// Where a corrupt queue is kept for a look (the last one only).
    pub fn set_aside_path(cx: &Context) -> PathBuf {
        aside_of(&Self::path(cx))
    }

    /// Where this run kept a copy of the corrupt queue, if it could.
    pub fn aside(&self) -> Option<&Path> {
        self.aside.as_deref()
    }

    pub fn is_corrupt(&self) -> bool {
        self.corrupt
    }

    /// After a corrupt queue: owe `every` notification, written over the corrupt file. A
    /// directory in its place, which no file can replace, is moved aside first (over the last
    /// one set aside).
    pub fn owe_all(&mut self, every: &[Notification]) -> Result<()> {
        for n in every {
            merge(&mut self.items, n);
        }
        self.corrupt = false;
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.is_dir()) {
            let to = aside_of(&self.path);
            let _ = std::fs::remove_file(&to).or_else(|_| std::fs::remove_dir_all(&to));
            std::fs::rename(&self.path, &to)
                .with_context(|| format!("cannot move the directory {} aside", self.path.display()))?;
            tracing::warn!("{} was a directory: moved aside to {}", self.path.display(), to.display());
            self.aside = Some(to);
        }
        self.save()
    }

    pub fn items(&self) -> &[Notification] {
        &self.items
    }

    /// Merge `ns` in and persist before returning, so the change that follows can't lose them.
    pub fn add(&mut self, ns: &[Notification]) -> Result<()> {
        let before = self.items.clone();
        for n in ns {
            merge(&mut self.items, n);
        }
        if self.items != before {
            self.save()?;
        }
        Ok(())
    }

    /// Drop `n` after it ran successfully, and persist.
    pub fn done(&mut self, n: &Notification) -> Result<()> {
        self.items.retain(|i| i != n);
        self.save()
    }

    fn save(&self) -> Result<()> {
        if self.items.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            };
        }
        atomic::write_plain(&self.path, &serde_json::to_vec_pretty(&self.items)?, 0o600)
    }
}

/// Add `n` to `items`: one entry per service, restart wins over reload.
pub fn merge(items: &mut Vec<Notification>, n: &Notification) {
    match items.iter_mut().find(|i| i.service == n.service) {
        Some(i) => i.action = i.action.max(n.action),
        None => items.push(n.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_merge() {
        let r = Notification::parse("reload haproxy").unwrap();
        let s = Notification::parse("restart haproxy").unwrap();
        assert!(Notification::parse("bounce haproxy").is_err());
        assert!(Notification::parse("haproxy").is_err());
        let mut items = Vec::new();
        merge(&mut items, &r);
        merge(&mut items, &r);
        assert_eq!(items.len(), 1);
        merge(&mut items, &s);
        assert_eq!(items, vec![s.clone()]);
        merge(&mut items, &r);
        assert_eq!(items, vec![s]);
    }
}
