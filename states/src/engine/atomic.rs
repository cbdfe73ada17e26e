//! Atomic file replacement: temp file in the same directory, fsync, validate, back up, rename,
//! fsync the directory. A crash at any point leaves the old file or the new one, never a mix.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _, Result};

use crate::engine::beneath;
use crate::engine::context::Context;
use crate::engine::layout::STATE_DIR;
use crate::engine::runner::Cmd;

/// Marks our temp files, so a later write can sweep those a killed run left behind.
const TMP_MARK: &str = ".bootstrap-tmp-";

pub struct FileWrite<'a> {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: u32,
    /// Validator argv; `{}` stands for the temp file (appended when absent).
    pub validate: Option<&'a [String]>,
    /// The content holds a secret (or a private key): no previous version is kept, and one
    /// kept before is removed, so a rotated-out secret doesn't outlive its rotation; a
    /// rejecting validator's output is not shown (it may quote the candidate).
    pub secret: bool,
}

/// Replace `abs` (a path as the role names it, resolved under the root) with `bytes`. The
/// directories on the way are reached without following links (`beneath`; they may be the
/// new owner's), missing ones made 0755; everything after goes through the directory so reached.
pub fn write_file(cx: &Context, abs: &Path, bytes: &[u8], w: &FileWrite) -> Result<()> {
    let (opened, name) = beneath::open_parent(cx, abs, Some(0o755), w.uid)?;
    let (dir, path) = (opened.path(), opened.join(&name));
    let (dir, name) = (dir.as_path(), name.as_str());
    sweep_stale(dir, name);

    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}{TMP_MARK}"))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temp file beside {}", abs.display()))?;
    tmp.write_all(bytes)?;
    let f = tmp.as_file();
    if w.uid.is_some() || w.gid.is_some() {
        std::os::unix::fs::fchown(f, w.uid, w.gid)
            .with_context(|| format!("cannot set the owner of {}", abs.display()))?;
    }
    f.set_permissions(fs::Permissions::from_mode(w.mode))?;
    f.sync_all()?;

    if let Some(argv) = w.validate {
        // The validator may run as another user (`runuser -u postgres`), who can't reach this
        // process's descriptors: it gets the temp file by its ordinary path (where the walk
        // found the directory, links resolved). It only reads.
        let named = cx.path(opened.resolved()).join(tmp.path().file_name().unwrap_or_default());
        validate(cx, abs, &named, argv, w.secret.then_some(bytes))?;
    }
    // The file being replaced may hold a secret even when the new content doesn't (a secret
    // moved elsewhere): a private one is not kept, as `absent` doesn't keep one.
    if w.secret || fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && is_private(m.mode())) {
        forget_backup(cx, abs)?;
    } else {
        backup(cx, abs, &path)?;
    }
    tmp.persist(&path).map_err(|e| anyhow!("cannot replace {}: {}", abs.display(), e.error))?;
    sync_dir(dir)
}

/// Run the validator on the candidate at `tmp`. With `secret` (the candidate's bytes), its
/// output is not shown: a tool may quote the candidate in forms no scrubber recognises
/// (`od -c` splits it into characters).
fn validate(cx: &Context, abs: &Path, tmp: &Path, argv: &[String], secret: Option<&[u8]>) -> Result<()> {
    let tmp = tmp.to_string_lossy();
    let mut argv: Vec<String> = argv.iter().map(|a| a.replace("{}", &tmp)).collect();
    if !argv.iter().any(|a| a.contains(tmp.as_ref())) {
        argv.push(tmp.to_string());
    }
    let out = cx.runner.run(&Cmd::from_argv(&argv)?)?;
    if !out.success() {
        if let Some(bytes) = secret {
            let code = out.code.map_or("a signal".to_string(), |c| format!("exit {c}"));
            let line = line_number(out.message(), bytes).map_or(String::new(), |n| format!(" at line {n}"));
            return Err(anyhow!(
                "{} rejected by `{}` ({code}){line}; its output is not shown, the file holds a secret",
                abs.display(),
                argv[0]
            ));
        }
        // The tool names the temp file; the operator knows the real one.
        let msg = out.message().replace(tmp.as_ref(), &abs.to_string_lossy());
        return Err(anyhow!("{} rejected by `{}`: {msg}", abs.display(), argv[0]));
    }
    Ok(())
}

/// The line a tool's message points at (`line N`, `:N:`), only when the candidate has that
/// many lines: a number from the message could otherwise be part of a quoted secret.
fn line_number(msg: &str, candidate: &[u8]) -> Option<usize> {
    let lines = candidate.split(|&b| b == b'\n').count();
    let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).map_or(s, |end| &s[..end]).to_string();
    let lower = msg.to_ascii_lowercase();
    let after_line = lower.match_indices("line ").map(|(i, _)| digits(&lower[i + 5..]));
    let colons = lower
        .match_indices(':')
        .map(|(i, _)| &lower[i + 1..])
        .filter_map(|rest| rest.split_once(':').map(|(n, _)| n.to_string()))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    after_line.chain(colons).find_map(|n| n.parse::<usize>().ok()).filter(|n| (1..=lines).contains(n))
}

/// A file mode others may not read: the file may hold a secret, so no copy of it is kept.
pub fn is_private(mode: u32) -> bool {
    mode & 0o004 == 0
}

/// Replace an internal file of ours (reports, queues) atomically with `mode`; no backup.
pub fn write_plain(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().ok_or_else(|| anyhow!("{} has no parent directory", path.display()))?;
    // A bare file name (`-o site.bundle`): the current directory.
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    own_dir(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    sweep_stale(dir, name);
    let mut tmp = tempfile::Builder::new().prefix(&format!(".{name}{TMP_MARK}")).tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| anyhow!("cannot write {}: {}", path.display(), e.error))?;
    sync_dir(dir)
}

/// Where the previous version of `abs` is kept: root-only, since it may hold secrets.
pub fn backup_path(cx: &Context, abs: &Path) -> PathBuf {
    cx.layout().backup_dir().join(abs.strip_prefix("/").unwrap_or(abs))
}

/// The regular file at `path`, opened without following a link and without blocking (whoever
/// owns the directory could have put a link to `/etc/shadow` or a FIFO there since the plan):
/// `None` when there is no regular file, or it has another name too.
pub fn open_regular(path: &Path) -> Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    // A file with another name too (a hard link) is not read as this one: whoever owns the
    // directory may have linked `/etc/shadow` in; it is written anew instead.
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata()?;
    Ok((m.is_file() && m.nlink() == 1).then_some(f))
}

/// The content of the regular file at `path` (opened as `open_regular` does), at most
/// `MAX_READ` bytes of it.
pub fn read_regular(path: &Path) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let Some(f) = open_regular(path)? else { return Ok(None) };
    let mut bytes = Vec::new();
    f.take(MAX_READ).read_to_end(&mut bytes).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(bytes))
}

/// The most of a current file that is read, to compare or keep (a managed file is a
/// configuration file).
const MAX_READ: u64 = 64 << 20;

/// Keep a copy of the current `path` as the previous version of `abs`, when it is a regular
/// file (read as `read_regular` does).
pub fn backup(cx: &Context, abs: &Path, path: &Path) -> Result<()> {
    let Some(bytes) = read_regular(path)? else { return Ok(()) };
    let dest = backup_path(cx, abs);
    own_dir(dest.parent().expect("backup path has a parent"))?;
    write_plain(&dest, &bytes, 0o600)
}

/// Remove the kept previous version of `abs`, if any.
pub fn forget_backup(cx: &Context, abs: &Path) -> Result<()> {
    let kept = backup_path(cx, abs);
    match fs::remove_file(&kept) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", kept.display()))
        }
        _ => Ok(()),
    }
}

/// Create `dir` for files of ours: the missing directories above it 0755 (`/var`, `/var/lib`
/// of a fresh tree are the system's, and others must be able to pass through them), bootstrap's
/// state directory and `dir` itself 0700.
fn own_dir(dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut d = dir;
    // A bare file name has the empty path as its directory: the current one.
    while !d.as_os_str().is_empty() && !d.is_dir() {
        missing.push(d);
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    let state = Path::new(STATE_DIR.trim_start_matches('/'));
    for m in missing.into_iter().rev() {
        let mode = if m == dir || m.ends_with(state) { 0o700 } else { 0o755 };
        match fs::DirBuilder::new().mode(mode).create(m) {
            // Exactly `mode`, whatever the umask (sudo keeps a 077 one): /var made 0700 would
            // shut every service out of its files.
            Ok(()) => fs::set_permissions(m, fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot set the mode of {}", m.display()))?,
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(e).with_context(|| format!("cannot create {}", m.display()))
            }
            _ => {}
        }
    }
    Ok(())
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("cannot sync directory {}", dir.display()))
}

/// Remove temp files of `name` that a killed run left in `dir`. Best effort.
fn sweep_stale(dir: &Path, name: &str) {
    let prefix = format!(".{name}{TMP_MARK}");
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn our_files_in_a_fresh_tree_leave_the_directories_above_passable() {
        let root = tempfile::tempdir().unwrap();
        // The strictest umask an operator's shell may have: the modes must not depend on it.
        let umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        write_plain(&root.path().join("var/lib/bootstrap/backup/etc/app/x.conf"), b"x", 0o600).unwrap();
        nix::sys::stat::umask(umask);
        assert_eq!(mode(&root.path().join("var")), 0o755);
        assert_eq!(mode(&root.path().join("var/lib")), 0o755);
        assert_eq!(mode(&root.path().join("var/lib/bootstrap")), 0o700);
        assert_eq!(mode(&root.path().join("var/lib/bootstrap/backup/etc/app")), 0o700);
        assert_eq!(mode(&root.path().join("var/lib/bootstrap/backup/etc/app/x.conf")), 0o600);
    }

    #[test]
    fn a_bare_or_relative_file_name_is_written_where_it_says() {
        let dir = tempfile::tempdir().unwrap();
        let back = std::env::current_dir().unwrap();
        std::env::set_current_dir(dir.path()).unwrap();
        let bare = write_plain(Path::new("site.bundle"), b"x", 0o644);
        let nested = write_plain(Path::new("out/site.bundle"), b"y", 0o644);
        std::env::set_current_dir(back).unwrap();
        bare.unwrap();
        nested.unwrap();
        assert_eq!(fs::read(dir.path().join("site.bundle")).unwrap(), b"x");
        assert_eq!(fs::read(dir.path().join("out/site.bundle")).unwrap(), b"y");
    }
}
