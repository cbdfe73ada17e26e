//! One run at a time: a non-blocking `flock` on `/run/bootstrap.lock`. The kernel drops the lock
//! when its holder dies, so a lock left by a killed run never blocks; what its children left
//! going is waited for once the lock is held (`engine::children`).

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context as _, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use states::engine::children;
use states::engine::layout::{Layout, LOCK_FILE};

/// The exit code when another run holds the lock (EX_TEMPFAIL).
pub const BUSY: i32 = 75;

/// Say so and return the exit code for a busy lock.
pub fn busy() -> i32 {
    eprintln!("another bootstrap run holds {LOCK_FILE}; not running");
    BUSY
}

/// What a killed run's children left going may not overlap this run: wait for it (then kill
/// it), and record this run's children. Best effort: without the record, a run still runs.
fn settle_children(root: &Path) {
    let dir = Layout::new(root).children_dir();
    if let Err(e) = children::take_over(&dir) {
        tracing::warn!("{e:#}");
    }
}

pub enum Lock {
    Held(#[allow(dead_code)] Flock<File>),
    Busy,
}

/// Take the lock. A dry run (`create = false`) writes nothing: it locks the file only when it
/// exists, and when it does not, no run is under way. An acting run on the node settles what a
/// killed run's children left before it goes on (`settle_children`).
pub fn acquire(root: &Path, create: bool) -> Result<Option<Lock>> {
    let path = Layout::new(root).lock_file();
    if !create && !path.exists() {
        return Ok(None);
    }
    // A staged release checking the node for the self-update that holds the lock: a dry run.
    if !create && std::env::var_os(crate::self_update::swap::SELF_CHECK_ENV).is_some() {
        return Ok(None);
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = OpenOptions::new()
        .create(create)
        .truncate(false)
        .read(true)
        .write(create)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => {
            if create && root == Path::new("/") {
                settle_children(root);
            }
            Ok(Some(Lock::Held(l)))
        }
        Err((_, Errno::EWOULDBLOCK)) => Ok(Some(Lock::Busy)),
        Err((_, e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}
