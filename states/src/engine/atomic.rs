//! Atomic file replacement: temp file in the same directory, fsync, validate, back up, rename,
//! fsync the directory. A crash at any point leaves the old file or the new one, never a mix.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _, Result};

use crate::engine::context::Context;
use crate::engine::runner::Cmd;

/// Marks our temp files, so a later write can sweep those a killed run left behind.
const TMP_MARK: &str = ".bootstrap-tmp-";

pub struct FileWrite<'a> {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: u32,
    /// Validator argv; `{}` stands for the temp file (appended when absent).
    pub validate: Option<&'a [String]>,
}

/// Replace `abs` (a path as the role names it, resolved under the root) with `bytes`.
pub fn write_file(cx: &Context, abs: &Path, bytes: &[u8], w: &FileWrite) -> Result<()> {
    let path = cx.path(abs);
    let dir = path.parent().ok_or_else(|| anyhow!("{} has no parent directory", abs.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    sweep_stale(dir, name);

    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}{TMP_MARK}"))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temp file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    let f = tmp.as_file();
    if w.uid.is_some() || w.gid.is_some() {
        std::os::unix::fs::fchown(f, w.uid, w.gid)
            .with_context(|| format!("cannot set the owner of {}", abs.display()))?;
    }
    f.set_permissions(fs::Permissions::from_mode(w.mode))?;
    f.sync_all()?;

    if let Some(argv) = w.validate {
        validate(cx, abs, tmp.path(), argv)?;
    }
    if path.is_file() {
        backup(cx, abs, &path)?;
    }
    tmp.persist(&path).map_err(|e| anyhow!("cannot replace {}: {}", abs.display(), e.error))?;
    sync_dir(dir)
}

fn validate(cx: &Context, abs: &Path, tmp: &Path, argv: &[String]) -> Result<()> {
    let tmp = tmp.to_string_lossy();
    let mut argv: Vec<String> = argv.iter().map(|a| a.replace("{}", &tmp)).collect();
    if !argv.iter().any(|a| a.contains(tmp.as_ref())) {
        argv.push(tmp.to_string());
    }
    let out = cx.runner.run(&Cmd::from_argv(&argv)?)?;
    if !out.success() {
        // The tool names the temp file; the operator knows the real one.
        let msg = out.message().replace(tmp.as_ref(), &abs.to_string_lossy());
        return Err(anyhow!("{} rejected by `{}`: {msg}", abs.display(), argv[0]));
    }
    Ok(())
}

/// Replace an internal file of ours (reports, queues) atomically with `mode`; no backup.
pub fn write_plain(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().ok_or_else(|| anyhow!("{} has no parent directory", path.display()))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
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

/// Keep a copy of the current `path` as the previous version of `abs`.
pub fn backup(cx: &Context, abs: &Path, path: &Path) -> Result<()> {
    let dest = backup_path(cx, abs);
    let dir = dest.parent().expect("backup path has a parent");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    write_plain(&dest, &bytes, 0o600)
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
