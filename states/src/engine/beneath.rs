//! Reaching a managed path without following links: every directory from the root down is
//! opened with `O_NOFOLLOW`, one at a time, so a directory someone else owns (postgres's, an
//! application's) that is swapped for a symlink can't make root write into `/etc/sudoers.d`,
//! and an absolute link in a `--root` tree can't lead out of it. What is then done by path
//! goes through the opened directory (`/proc/self/fd/N/...`), which names that directory and
//! nothing a later rename or link could put in its place.
//!
//! Only a link root placed is followed (owned by root, in a directory only root can write:
//! the operator's `/var/www -> /data/www`, Debian's `/var/run -> /run`), resolved inside the
//! root. Every directory on the way must be root's or the managed file's owner's, and
//! writable by no one else (unless sticky): whoever else could write there could replace what
//! bootstrap writes. "Root" is also the user running bootstrap, who owns a `--root` tree.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};

use crate::engine::context::Context;

/// A directory reached without following links; its path through `/proc` names it alone.
pub struct Dir {
    fd: OwnedFd,
    resolved: PathBuf,
}

impl Dir {
    /// The directory as a path that can't be redirected (while this value lives), for this
    /// process only.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// `name` inside the directory, by the same kind of path.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// Where the directory is on the node, with the links followed on the way resolved: for
    /// a validator, which may run as another user and gets an ordinary path.
    pub fn resolved(&self) -> &Path {
        &self.resolved
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

const DIR_FLAGS: OFlag = OFlag::O_DIRECTORY.union(OFlag::O_NOFOLLOW).union(OFlag::O_CLOEXEC).union(OFlag::O_RDONLY);

/// The most links a walk follows (a loop ends here).
const MAX_LINKS: usize = 8;

/// Marks a step up (`..` in a link's target) among the names still to walk: no name in a
/// plain path is `..`.
const UP: &str = "..";

/// Opens `abs` (a directory as the role names it) under the root without following a link
/// anywhere below the root (but those root placed). `create`: missing directories are made
/// with this mode. `owner`: the uid the managed file will have (`None`: root's), who may own
/// the directories on the way besides root.
pub fn open_dir(cx: &Context, abs: &Path, create: Option<u32>, owner: Option<u32>) -> Result<Dir> {
    walk(cx, abs, create, owner)?.map_err(|missing| anyhow!("cannot open {}: it does not exist", missing.display()))
}

/// The directory holding `abs` (opened as `open_dir` does) and the file's name in it.
pub fn open_parent(cx: &Context, abs: &Path, create: Option<u32>, owner: Option<u32>) -> Result<(Dir, String)> {
    let (parent, name) = split(abs)?;
    Ok((open_dir(cx, parent, create, owner)?, name))
}

/// For a plan: `open_parent` without making anything, `None` when a directory on the way does
/// not exist yet (nothing is there).
pub fn find_parent(cx: &Context, abs: &Path, owner: Option<u32>) -> Result<Option<(Dir, String)>> {
    let (parent, name) = split(abs)?;
    Ok(walk(cx, parent, None, owner)?.ok().map(|d| (d, name)))
}

fn split(abs: &Path) -> Result<(&Path, String)> {
    let parent = abs.parent().ok_or_else(|| anyhow!("{} has no parent directory", abs.display()))?;
    let name = abs
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{} has no file name", abs.display()))?
        .to_string();
    Ok((parent, name))
}

/// The walk: the directory, or the first one on the way that is missing (only when `create`
/// is `None`).
fn walk(cx: &Context, abs: &Path, create: Option<u32>, owner: Option<u32>) -> Result<Result<Dir, PathBuf>> {
    let root = nix::fcntl::open(&cx.root, OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_RDONLY, Mode::empty())
        .map_err(|e| anyhow!("cannot open the root {}: {e}", cx.root.display()))?;
    let mut todo = VecDeque::new();
    for c in abs.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => todo.push_back(n.to_os_string()),
            _ => bail!("{} is not a plain absolute path", abs.display()),
        }
    }
    // The directories from the root down to where the walk is: `..` goes back up one, never
    // above the root.
    let mut stack: Vec<(OwnedFd, PathBuf)> = vec![(root, PathBuf::from("/"))];
    let mut links = 0;
    let trust = Trust { me: nix::unistd::Uid::effective().as_raw(), owner, abs };
    while let Some(name) = todo.pop_front() {
        if name == UP {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let (fd, at) = stack.last().expect("the root stays");
        let here = at.join(&name);
        let next = match openat(fd.as_fd(), name.as_os_str(), DIR_FLAGS, Mode::empty()) {
            Ok(next) => {
                trust.dir(&next, &here)?;
                next
            }
            Err(Errno::ENOENT) => {
                let Some(mode) = create else { return Ok(Err(here)) };
                let made = match mkdirat(fd.as_fd(), name.as_os_str(), Mode::from_bits_truncate(mode)) {
                    Ok(()) => true,
                    // Made meanwhile by another: checked like any directory met.
                    Err(Errno::EEXIST) => false,
                    Err(e) => bail!("cannot create {}: {e}", here.display()),
                };
                let next = openat(fd.as_fd(), name.as_os_str(), DIR_FLAGS, Mode::empty())
                    .map_err(|e| anyhow!("cannot open {}: {e}", here.display()))?;
                if made {
                    // Ours, so nothing to check; the umask may have narrowed its mode.
                    fchmod(next.as_fd(), Mode::from_bits_truncate(mode))
                        .map_err(|e| anyhow!("cannot set the mode of {}: {e}", here.display()))?;
                } else {
                    trust.dir(&next, &here)?;
                }
                next
            }
            Err(e) => match fstatat(fd.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(link) if kind(&link) == SFlag::S_IFLNK => {
                    let target = trust.link(fd.as_fd(), &name, &link, &here)?;
                    links += 1;
                    if links > MAX_LINKS {
                        bail!("too many links on the way to {} (more than {MAX_LINKS}: a loop?)", abs.display());
                    }
                    // An absolute target is under the root, never outside it.
                    if target.is_absolute() {
                        stack.truncate(1);
                    }
                    for c in target.components().rev() {
                        match c {
                            Component::Normal(n) => todo.push_front(n.to_os_string()),
                            Component::ParentDir => todo.push_front(UP.into()),
                            _ => {}
                        }
                    }
                    continue;
                }
                Ok(st) if kind(&st) != SFlag::S_IFDIR => {
                    bail!("{} is not a directory (on the way to {})", here.display(), abs.display())
                }
                _ => bail!("cannot open {}: {e}", here.display()),
            },
        };
        stack.push((next, here));
    }
    let (fd, resolved) = stack.pop().expect("the root stays");
    Ok(Ok(Dir { fd, resolved }))
}

/// Who may have placed what the walk meets.
struct Trust<'a> {
    /// The user running bootstrap (root on a node).
    me: u32,
    owner: Option<u32>,
    abs: &'a Path,
}

impl Trust<'_> {
    fn root(&self, uid: u32) -> bool {
        uid == 0 || uid == self.me
    }

    /// A directory on the way: root's or the file's owner's, and no one else may write in it
    /// (but with the sticky bit, where no one can rename what another owns).
    fn dir(&self, fd: &OwnedFd, here: &Path) -> Result<()> {
        let st = fstat(fd).map_err(|e| anyhow!("cannot inspect {}: {e}", here.display()))?;
        if !self.root(st.st_uid) && Some(st.st_uid) != self.owner {
            bail!(
                "{} is owned by user {}{} (not root and not the file's owner): another user could replace what bootstrap writes there (on the way to {}); if what is written there is that user's, say so with `owner`",
                here.display(),
                st.st_uid,
                name_of(st.st_uid),
                self.abs.display()
            );
        }
        if writable_by_others(&st) && st.st_mode & 0o1000 == 0 {
            bail!(
                "{} is writable by {} (mode {:04o}, no sticky bit): another user could replace what bootstrap writes there (on the way to {})",
                here.display(),
                others(&st),
                st.st_mode & 0o7777,
                self.abs.display()
            );
        }
        Ok(())
    }

    /// The target of the link `name` in `dir`, when root placed it: the link is root's and so
    /// is its directory, which no one else can write.
    fn link(&self, dir: BorrowedFd, name: &OsString, link: &FileStat, here: &Path) -> Result<PathBuf> {
        let refused = |why: String| {
            anyhow!(
                "{} is a symbolic link {why}: bootstrap follows only links root placed (on the way to {})",
                here.display(),
                self.abs.display()
            )
        };
        if !self.root(link.st_uid) {
            return Err(refused(format!("owned by user {}", link.st_uid)));
        }
        let st = fstat(dir).map_err(|e| anyhow!("cannot inspect the directory of {}: {e}", here.display()))?;
        if !self.root(st.st_uid) {
            return Err(refused(format!("in a directory owned by user {}", st.st_uid)));
        }
        if writable_by_others(&st) {
            return Err(refused(format!(
                "in a directory writable by {} (mode {:04o})",
                others(&st),
                st.st_mode & 0o7777
            )));
        }
        Ok(readlinkat(dir, name.as_os_str())
            .map_err(|e| anyhow!("cannot read the link {}: {e}", here.display()))?
            .into())
    }
}

/// What `name` in `dir` is, without following a link there; `None` when nothing is.
pub fn lstat_at(dir: &Dir, name: &str) -> Result<Option<FileStat>> {
    match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => bail!("cannot inspect {}: {e}", dir.resolved().join(name).display()),
    }
}

/// The file type bits of `st` (`S_IFLNK`, `S_IFDIR`, ...).
pub fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

/// ` (name)` of a uid for messages, when this system knows it.
fn name_of(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| format!(" ({})", u.name))
        .unwrap_or_default()
}

/// Groups whose write access is root's anyway: root's own, and Debian's `staff` (gid 50,
/// fixed by base-passwd), which may write `/usr/local` (root's PATH runs from it) and keeps it
/// 2775 on systems installed before that changed.
const ROOT_EQUIVALENT_GROUPS: [u32; 2] = [0, 50];

/// Can someone other than the owner (and root) write in it?
fn writable_by_others(st: &FileStat) -> bool {
    st.st_mode & 0o002 != 0 || (st.st_mode & 0o020 != 0 && !ROOT_EQUIVALENT_GROUPS.contains(&st.st_gid))
}

fn others(st: &FileStat) -> &'static str {
    if st.st_mode & 0o002 != 0 {
        "every user"
    } else {
        "its group"
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{chown, lchown, symlink, PermissionsExt};

    fn cx(root: &Path) -> Context {
        Context::for_tests(root)
    }

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn refused(cx: &Context, abs: &str) -> String {
        open_dir(cx, Path::new(abs), Some(0o755), None).err().expect(abs).to_string()
    }

    #[test]
    fn links_below_the_root_are_refused_and_missing_dirs_made() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let cx = cx(t.path());
        fs::create_dir_all(t.path().join("var/lib")).unwrap();
        // Links a user placed (this test, as root, lends them to uid 1000).
        symlink(outside.path(), t.path().join("var/lib/app")).unwrap();
        symlink("/etc", t.path().join("etc")).unwrap();
        lchown(t.path().join("var/lib/app"), Some(1000), None).unwrap();
        lchown(t.path().join("etc"), Some(1000), None).unwrap();
        let err = refused(&cx, "/var/lib/app/conf");
        assert!(err.contains("/var/lib/app is a symbolic link owned by user 1000"), "{err}");
        let err = open_dir(&cx, Path::new("/etc/sudoers.d"), None, None).err().unwrap().to_string();
        assert!(err.contains("/etc is a symbolic link"), "an absolute link led out of the root: {err}");
        // A root-owned link in a directory others can write (sticky, so passable) is anyone's.
        fs::create_dir(t.path().join("pub")).unwrap();
        chmod(&t.path().join("pub"), 0o1777);
        symlink(outside.path(), t.path().join("pub/l")).unwrap();
        let err = refused(&cx, "/pub/l/x");
        assert!(err.contains("/pub/l is a symbolic link in a directory writable by every user"), "{err}");
        assert!(fs::read_dir(outside.path()).unwrap().next().is_none(), "something was made through a link");

        let d = open_dir(&cx, Path::new("/srv/new/dir"), Some(0o750), None).unwrap();
        fs::write(d.join("f"), "x").unwrap();
        assert_eq!(fs::read_to_string(t.path().join("srv/new/dir/f")).unwrap(), "x");
        assert_eq!(fs::metadata(t.path().join("srv/new")).unwrap().permissions().mode() & 0o777, 0o750);
        fs::write(t.path().join("srv/file"), "").unwrap();
        let err = refused(&cx, "/srv/file/x");
        assert!(err.contains("/srv/file is not a directory"), "{err}");
        assert!(find_parent(&cx, Path::new("/srv/none/f"), None).unwrap().is_none());
    }

    #[test]
    fn links_root_placed_are_followed_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let cx = cx(t.path());
        fs::create_dir_all(t.path().join("var")).unwrap();
        fs::create_dir_all(t.path().join("srv")).unwrap();
        fs::create_dir_all(t.path().join("data/www")).unwrap();
        // The operator's `/var/www -> /data/www`: absolute, so under the root.
        symlink("/data/www", t.path().join("var/www")).unwrap();
        let d = open_dir(&cx, Path::new("/var/www/site"), Some(0o755), None).unwrap();
        fs::write(d.join("index.html"), "x").unwrap();
        assert_eq!(fs::read_to_string(t.path().join("data/www/site/index.html")).unwrap(), "x");
        assert_eq!(d.resolved(), Path::new("/data/www/site"));
        // `..` stops at the root.
        symlink("../../../../data", t.path().join("srv/up")).unwrap();
        let d = open_dir(&cx, Path::new("/srv/up/www"), None, None).unwrap();
        assert_eq!(d.resolved(), Path::new("/data/www"));
        symlink("loop", t.path().join("srv/loop")).unwrap();
        let err = refused(&cx, "/srv/loop/x");
        assert!(err.contains("too many links on the way to /srv/loop/x"), "{err}");
    }

    #[test]
    fn directories_others_could_change_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let cx = cx(t.path());
        // Debian's /etc/postgresql/15/main: postgres's, for files postgres owns.
        let main = t.path().join("etc/postgresql/15/main");
        fs::create_dir_all(&main).unwrap();
        for d in ["etc/postgresql", "etc/postgresql/15", "etc/postgresql/15/main"] {
            chown(t.path().join(d), Some(104), Some(104)).unwrap();
        }
        let abs = Path::new("/etc/postgresql/15/main");
        let err = open_dir(&cx, abs, None, None).err().unwrap().to_string();
        assert!(
            err.contains("/etc/postgresql is owned by user 104") && err.contains("(not root and not the file's owner)"),
            "{err}"
        );
        open_dir(&cx, abs, None, Some(104)).unwrap();
        let err = open_dir(&cx, abs, None, Some(105)).err().unwrap().to_string();
        assert!(err.contains("owned by user 104"), "{err}");

        fs::create_dir_all(t.path().join("srv/shared")).unwrap();
        chmod(&t.path().join("srv/shared"), 0o775);
        chown(t.path().join("srv/shared"), None, Some(1000)).unwrap();
        let err = refused(&cx, "/srv/shared/x");
        assert!(err.contains("/srv/shared is writable by its group (mode 0775, no sticky bit)"), "{err}");
        assert!(!t.path().join("srv/shared/x").exists());
        fs::create_dir_all(t.path().join("tmp")).unwrap();
        chmod(&t.path().join("tmp"), 0o1777);
        open_dir(&cx, Path::new("/tmp/x"), Some(0o755), None).unwrap();
        // Root's group, or Debian's root-equivalent staff on an older /usr/local: allowed.
        fs::create_dir_all(t.path().join("usr/local")).unwrap();
        chown(t.path().join("usr/local"), None, Some(50)).unwrap();
        chmod(&t.path().join("usr/local"), 0o2775);
        open_dir(&cx, Path::new("/usr/local/lib/bootstrap"), Some(0o755), None).unwrap();
    }
}
