//! A roles directory is code run as root: whoever can change a role file, or rename the
//! directory or one above it, runs commands as root on the next scheduled run. So the
//! directory, every directory above it and everything in it must belong to root (or to the
//! user running bootstrap) and be writable by no one else; a directory above it may be
//! world-writable only with the sticky bit (`/tmp`: others can't rename what they don't own).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

const STICKY: u32 = 0o1000;

/// The roles directory with links resolved, once it and everything in it passed: read the
/// roles through this path, so a link swapped after the check can't redirect them.
pub fn check(dir: &Path) -> Result<PathBuf> {
    let me = nix::unistd::Uid::effective().as_raw();
    let real = resolved(dir, me)?;
    check_under(&real, me, 0)?;
    Ok(real)
}

/// Every entry of `dir` (links followed: what they point at is what gets read), and the
/// directories they lead into. A dangling link is never read: skipped.
fn check_under(dir: &Path, me: u32, depth: usize) -> Result<()> {
    if depth > 8 {
        bail!("{}: directories nested too deep under the roles directory (a link loop?)", dir.display());
    }
    for e in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = e?.path();
        let real = match fs::canonicalize(&path) {
            Ok(real) => checked(real, me)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot resolve {}", path.display())),
        };
        if real.is_dir() {
            check_under(&real, me, depth + 1)?;
        }
    }
    Ok(())
}

/// `path` with links resolved, checked with every directory above it.
fn resolved(path: &Path, me: u32) -> Result<PathBuf> {
    checked(fs::canonicalize(path).with_context(|| format!("roles directory: {}", path.display()))?, me)
}

/// `real` (links resolved) checked with every directory above it.
fn checked(real: PathBuf, me: u32) -> Result<PathBuf> {
    let mut above = real.parent();
    while let Some(d) = above {
        safe(d, me, true)?;
        above = d.parent();
    }
    safe(&real, me, false)?;
    Ok(real)
}

fn safe(path: &Path, me: u32, above: bool) -> Result<()> {
    let m = fs::symlink_metadata(path).with_context(|| format!("cannot inspect {}", path.display()))?;
    let mode = m.permissions().mode();
    if m.uid() != 0 && m.uid() != me {
        bail!(
            "{} belongs to uid {}: a roles directory runs as root, so it and everything in and above it must belong to root. Nothing was changed.",
            path.display(),
            m.uid()
        );
    }
    if mode & 0o022 != 0 && !(above && mode & STICKY != 0) {
        bail!(
            "{} is writable by {} (mode {:04o}): a roles directory runs as root, so no one else may change it or anything in and above it (chmod go-w). Nothing was changed.",
            path.display(),
            if mode & 0o002 != 0 { "every user" } else { "its group" },
            mode & 0o7777
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_roles_directory_others_can_change_is_refused() {
        let top = tempfile::tempdir().unwrap();
        let roles = top.path().join("roles");
        fs::create_dir_all(roles.join("templates")).unwrap();
        fs::write(roles.join("web.toml"), "").unwrap();
        fs::write(roles.join("templates/a.hbs"), "").unwrap();
        let set = |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
        set(top.path(), 0o755);
        set(&roles, 0o755);
        assert_eq!(check(&roles).unwrap(), fs::canonicalize(&roles).unwrap());
        // A dangling link (an editor's lock file) is never read: no reason to refuse.
        std::os::unix::fs::symlink("/nonexistent/x", roles.join(".#web.toml")).unwrap();
        check(&roles).unwrap();
        // What a link leads into counts: a linked templates directory with a file others may
        // change is refused.
        let elsewhere = top.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        set(&elsewhere, 0o755);
        fs::write(elsewhere.join("b.hbs"), "").unwrap();
        std::os::unix::fs::symlink(&elsewhere, roles.join("linked")).unwrap();
        check(&roles).unwrap();
        set(&elsewhere.join("b.hbs"), 0o646);
        let e = check(&roles).unwrap_err().to_string();
        assert!(e.contains("b.hbs") && e.contains("every user"), "{e}");
        set(&elsewhere.join("b.hbs"), 0o644);

        for (path, bad) in [
            (roles.join("templates/a.hbs"), 0o666),
            (roles.join("web.toml"), 0o664),
            (roles.join("templates"), 0o777),
            (roles.clone(), 0o775),
            (top.path().to_path_buf(), 0o777),
        ] {
            let before = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
            set(&path, bad);
            let e = check(&roles).expect_err(&format!("{} {bad:o} accepted", path.display())).to_string();
            assert!(e.contains(&path.display().to_string()) && e.contains("writable"), "{e}");
            set(&path, before);
        }
        // A sticky world-writable directory above (like /tmp) is fine; the roles one is not.
        set(top.path(), 0o1777);
        check(&roles).unwrap();
        set(&roles, 0o1777);
        assert!(check(&roles).is_err());
    }
}
