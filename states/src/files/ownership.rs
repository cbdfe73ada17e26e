//! Owner, group and mode: parsing from roles, comparing with what is on disk, applying.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Deserializer};

use crate::engine::beneath;
use crate::engine::context::Context;
use crate::engine::contract::Change;

/// A permission mode such as `0640`, written in roles as an octal string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode(pub u32);

impl Mode {
    pub fn parse(s: &str) -> Result<Mode> {
        let m = u32::from_str_radix(s, 8).map_err(|_| anyhow!("mode `{s}` is not an octal number like \"0644\""))?;
        if m > 0o7777 {
            bail!("mode `{s}` is out of range (at most 7777)");
        }
        Ok(Mode(m))
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Mode::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// Who owns a path and its mode; `None` leaves that attribute as it is.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Ownership {
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<Mode>,
}

/// Operations on attributes of an existing path.
#[derive(Debug, Clone)]
pub enum MetaOp {
    Chown { owner: Option<String>, group: Option<String> },
    Chmod(Mode),
}

impl Ownership {
    /// Changes needed for an existing path with metadata `meta`.
    pub fn plan(&self, meta: &Metadata) -> Vec<Change> {
        let mut changes = Vec::new();
        let owner = self.owner.as_ref().filter(|o| uid(o).ok().flatten() != Some(meta.uid()));
        let group = self.group.as_ref().filter(|g| gid(g).ok().flatten() != Some(meta.gid()));
        if owner.is_some() || group.is_some() {
            let now = format!("{}:{}", meta.uid(), meta.gid());
            let want = format!("{}:{}", owner.map_or("-", String::as_str), group.map_or("-", String::as_str));
            changes.push(Change::new(
                format!("owner {now} -> {want}"),
                MetaOp::Chown { owner: owner.cloned(), group: group.cloned() },
            ));
        }
        if let Some(mode) = self.mode {
            let have = meta.mode() & 0o7777;
            if have != mode.0 {
                changes.push(Change::new(format!("mode {} -> {mode}", Mode(have)), MetaOp::Chmod(mode)));
            }
        }
        changes
    }

    pub fn with_mode(&self, mode: Mode) -> Ownership {
        Ownership { mode: Some(mode), ..self.clone() }
    }

    /// Every attribute operation this ownership names, for a path just created.
    pub fn all_ops(&self) -> Vec<MetaOp> {
        let mut v = Vec::new();
        if self.owner.is_some() || self.group.is_some() {
            v.push(MetaOp::Chown { owner: self.owner.clone(), group: self.group.clone() });
        }
        v.extend(self.mode.map(MetaOp::Chmod));
        v
    }

    /// The owner's uid, for the directories on the way (`beneath`): `None` when the role
    /// names none, or a user not made yet (a plan made ahead): root's rule then.
    pub fn owner_uid(&self) -> Option<u32> {
        self.owner.as_deref().and_then(|o| uid(o).ok().flatten())
    }

    /// The numeric owner and group for a new path (`None`: the creating process's own).
    pub fn ids(&self) -> Result<(Option<u32>, Option<u32>)> {
        let u = match &self.owner {
            Some(o) => Some(uid(o)?.ok_or_else(|| anyhow!("user `{o}` does not exist"))?),
            None => None,
        };
        let g = match &self.group {
            Some(g) => Some(gid(g)?.ok_or_else(|| anyhow!("group `{g}` does not exist"))?),
            None => None,
        };
        Ok((u, g))
    }
}

/// `apply_meta_owned` on a path of root's.
pub fn apply_meta_at<'a>(cx: &Context, abs: &Path, ops: impl Iterator<Item = &'a MetaOp>) -> Result<()> {
    apply_meta_owned(cx, abs, None, ops)
}

/// `apply_meta` on `abs` (a path as the role names it) under the root, reached without
/// following a link in any directory on the way (`beneath`); those directories may be
/// `owner`'s (the path's owner as the role gives it, `None`: root).
pub fn apply_meta_owned<'a>(
    cx: &Context,
    abs: &Path,
    owner: Option<u32>,
    ops: impl Iterator<Item = &'a MetaOp>,
) -> Result<()> {
    let ops: Vec<&MetaOp> = ops.collect();
    if ops.is_empty() {
        return Ok(());
    }
    let (dir, name) = beneath::open_parent(cx, abs, None, owner)?;
    let through = dir.join(&name);
    // Errors name the path as the operator knows it, not the descriptor's.
    apply_meta(&through, ops.into_iter()).map_err(|e| {
        anyhow!("{}", format!("{e:#}").replace(&through.display().to_string(), &abs.display().to_string()))
    })
}

/// Carry out attribute operations on `path` (chown first: it may clear set-id bits), on the
/// file opened without following a link there: a file swapped for a link since the plan
/// (to `/etc/shadow`, say) is not what gets the new mode. A link itself only changes owner.
pub fn apply_meta<'a>(path: &Path, ops: impl Iterator<Item = &'a MetaOp>) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut ops: Vec<&MetaOp> = ops.collect();
    if ops.is_empty() {
        return Ok(());
    }
    ops.sort_by_key(|op| matches!(op, MetaOp::Chmod(_)));
    let is_link = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot inspect {}", path.display()))?
        .file_type()
        .is_symlink();
    let file = if is_link {
        None
    } else {
        Some(
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path)
                .with_context(|| format!("cannot open {} to change its owner or mode", path.display()))?,
        )
    };
    // A second name for the file (a hard link its directory's owner made to /etc/shadow, say)
    // would carry the change elsewhere.
    if let Some(f) = &file {
        use std::os::unix::fs::MetadataExt;
        let m = f.metadata().with_context(|| format!("cannot inspect {}", path.display()))?;
        if m.is_file() && m.nlink() > 1 {
            bail!(
                "{} has {} hard links: bootstrap changes no owner or mode of a file that also has another name",
                path.display(),
                m.nlink()
            );
        }
    }
    for op in ops {
        match (op, &file) {
            (MetaOp::Chown { owner, group }, f) => {
                let o = Ownership { owner: owner.clone(), group: group.clone(), mode: None };
                let (u, g) = o.ids()?;
                match f {
                    Some(f) => std::os::unix::fs::fchown(f, u, g),
                    None => std::os::unix::fs::lchown(path, u, g),
                }
                .with_context(|| format!("cannot change owner of {}", path.display()))?;
            }
            (MetaOp::Chmod(m), Some(f)) => f
                .set_permissions(std::fs::Permissions::from_mode(m.0))
                .with_context(|| format!("cannot change mode of {}", path.display()))?,
            (MetaOp::Chmod(_), None) => bail!("{} is a symbolic link: its mode can't be set", path.display()),
        }
    }
    Ok(())
}

/// Found ids are cached for the run; a name not found is asked again, since a state of this
/// run may create it.
fn cached(table: &'static str, name: &str, lookup: impl Fn(&str) -> Option<u32>) -> Result<Option<u32>> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(Some(n));
    }
    static CACHE: OnceLock<Mutex<HashMap<(&'static str, String), u32>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(id) = cache.lock().unwrap().get(&(table, name.to_string())) {
        return Ok(Some(*id));
    }
    let id = lookup(name);
    if let Some(id) = id {
        cache.lock().unwrap().insert((table, name.to_string()), id);
    }
    Ok(id)
}

pub fn uid(name: &str) -> Result<Option<u32>> {
    cached("user", name, |n| nix::unistd::User::from_name(n).ok().flatten().map(|u| u.uid.as_raw()))
}

pub fn gid(name: &str) -> Result<Option<u32>> {
    cached("group", name, |n| nix::unistd::Group::from_name(n).ok().flatten().map(|g| g.gid.as_raw()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_a_second_name_is_neither_read_nor_changed() {
        let t = tempfile::tempdir().unwrap();
        let secret = t.path().join("shadow");
        std::fs::write(&secret, "root:x\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let managed = t.path().join("pg_hba.conf");
        std::fs::hard_link(&secret, &managed).unwrap();
        let err = apply_meta(&managed, [MetaOp::Chmod(Mode(0o644))].iter()).unwrap_err().to_string();
        assert!(err.contains("has 2 hard links"), "{err}");
        assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(crate::engine::atomic::read_regular(&managed).unwrap().is_none(), "read through a hard link");
        std::fs::remove_file(&secret).unwrap();
        assert_eq!(crate::engine::atomic::read_regular(&managed).unwrap().unwrap(), b"root:x\n");
        apply_meta(&managed, [MetaOp::Chmod(Mode(0o644))].iter()).unwrap();
    }

    #[test]
    fn mode_parsing() {
        assert_eq!(Mode::parse("0640").unwrap(), Mode(0o640));
        assert_eq!(Mode::parse("755").unwrap(), Mode(0o755));
        assert!(Mode::parse("0999").is_err());
        assert!(Mode::parse("17777").is_err());
        assert_eq!(Mode(0o600).to_string(), "0600");
    }

    #[test]
    fn root_resolves_by_name_and_number() {
        assert_eq!(uid("root").unwrap(), Some(0));
        assert_eq!(gid("0").unwrap(), Some(0));
        assert_eq!(uid("no-such-user-bootstrap").unwrap(), None);
    }
}
