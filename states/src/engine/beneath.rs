//! Reaching a managed path without following links: every directory from the root down is
//! opened with `O_NOFOLLOW`, one at a time, so a directory someone else owns (postgres's, an
//! application's) that is swapped for a symlink can't make root write into `/etc/sudoers.d`,
//! and an absolute link in a `--root` tree can't lead out of it. What is then done by path
//! goes through the opened directory (`/proc/self/fd/N/...`), which names that directory and
//! nothing a later rename or link could put in its place.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, Mode, SFlag};

use crate::engine::context::Context;

/// A directory reached without following links; its path through `/proc` names it alone.
pub struct Dir {
    fd: OwnedFd,
}

impl Dir {
    /// The directory as a path that can't be redirected (while this value lives), for this
    /// process only (a validator gets the ordinary path: it may run as another user).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// `name` inside the directory, by the same kind of path.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }
}

const DIR_FLAGS: OFlag = OFlag::O_DIRECTORY.union(OFlag::O_NOFOLLOW).union(OFlag::O_CLOEXEC).union(OFlag::O_RDONLY);

/// Opens `abs` (a directory as the role names it) under the root without following a link
/// anywhere below the root. `create`: missing directories are made with this mode.
pub fn open_dir(cx: &Context, abs: &Path, create: Option<u32>) -> Result<Dir> {
    let root = nix::fcntl::open(&cx.root, OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_RDONLY, Mode::empty())
        .map_err(|e| anyhow!("cannot open the root {}: {e}", cx.root.display()))?;
    let mut fd = root;
    let mut here = PathBuf::from("/");
    for c in abs.components() {
        let name = match c {
            Component::RootDir => continue,
            Component::Normal(n) => n,
            _ => bail!("{} is not a plain absolute path", abs.display()),
        };
        here.push(name);
        let next = match openat(fd.as_fd(), name, DIR_FLAGS, Mode::empty()) {
            Ok(next) => next,
            Err(Errno::ENOENT) if create.is_some() => {
                let mode = create.unwrap_or(0o755);
                match mkdirat(fd.as_fd(), name, Mode::from_bits_truncate(mode)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => bail!("cannot create {}: {e}", here.display()),
                }
                let made = openat(fd.as_fd(), name, DIR_FLAGS, Mode::empty())
                    .map_err(|e| anyhow!("cannot open {}: {e}", here.display()))?;
                // The umask may have narrowed it.
                fchmod(made.as_fd(), Mode::from_bits_truncate(mode))
                    .map_err(|e| anyhow!("cannot set the mode of {}: {e}", here.display()))?;
                made
            }
            Err(e) => {
                let kind = fstatat(fd.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT);
                return Err(match kind {
                    Ok(SFlag::S_IFLNK) => anyhow!(
                        "{} is a symbolic link: bootstrap does not write through links (on the way to {})",
                        here.display(),
                        abs.display()
                    ),
                    Ok(k) if k != SFlag::S_IFDIR => {
                        anyhow!("{} is not a directory (on the way to {})", here.display(), abs.display())
                    }
                    _ => anyhow!("cannot open {}: {e}", here.display()),
                });
            }
        };
        fd = next;
    }
    Ok(Dir { fd })
}

/// The directory holding `abs` (opened as `open_dir` does) and the file's name in it.
pub fn open_parent(cx: &Context, abs: &Path, create: Option<u32>) -> Result<(Dir, String)> {
    let parent = abs.parent().ok_or_else(|| anyhow!("{} has no parent directory", abs.display()))?;
    let name = abs
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{} has no file name", abs.display()))?
        .to_string();
    Ok((open_dir(cx, parent, create)?, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::facts::Facts;
    use crate::engine::runner::SystemRunner;
    use crate::engine::secrets::Secrets;

    fn cx(root: &Path) -> Context {
        Context {
            root: root.to_path_buf(),
            facts: Facts::default(),
            secrets: Secrets::default(),
            runner: Box::new(SystemRunner),
            shared: Default::default(),
        }
    }

    #[test]
    fn links_below_the_root_are_refused_and_missing_dirs_made() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let cx = cx(t.path());
        std::fs::create_dir_all(t.path().join("var/lib")).unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("var/lib/app")).unwrap();
        std::os::unix::fs::symlink("/etc", t.path().join("etc")).unwrap();
        let err = open_dir(&cx, Path::new("/var/lib/app/conf"), Some(0o755)).err().unwrap().to_string();
        assert!(err.contains("/var/lib/app is a symbolic link"), "{err}");
        let err = open_dir(&cx, Path::new("/etc/sudoers.d"), None).err().unwrap().to_string();
        assert!(err.contains("/etc is a symbolic link"), "an absolute link led out of the root: {err}");
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none(), "something was made through the link");
        let d = open_dir(&cx, Path::new("/srv/new/dir"), Some(0o750)).unwrap();
        std::fs::write(d.join("f"), "x").unwrap();
        assert_eq!(std::fs::read_to_string(t.path().join("srv/new/dir/f")).unwrap(), "x");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(t.path().join("srv/new")).unwrap().permissions().mode() & 0o777, 0o750);
        std::fs::write(t.path().join("srv/file"), "").unwrap();
        let err = open_dir(&cx, Path::new("/srv/file/x"), Some(0o755)).err().unwrap().to_string();
        assert!(err.contains("/srv/file is not a directory"), "{err}");
    }
}
