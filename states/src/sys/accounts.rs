//! The local account databases, `/etc/passwd` and `/etc/group` under the root, read once per
//! run and shared by the `user` and `group` states. Both are read and forgotten together:
//! `useradd` may create a group, `userdel` may delete one.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};

use crate::engine::context::Context;
use crate::engine::runner::Cmd;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Accounts {
    pub users: Vec<UserEntry>,
    pub groups: Vec<GroupEntry>,
    user_index: HashMap<String, usize>,
    group_index: HashMap<String, usize>,
}

impl Accounts {
    /// The shared, run-scoped view of the accounts under `cx.root`.
    pub fn get(cx: &Context) -> Result<Arc<Accounts>> {
        cx.shared.observe(|| Accounts::read(&cx.path("/etc/passwd"), &cx.path("/etc/group")))
    }

    /// After `useradd`, `groupmod`…: the next plan reads the files again.
    pub fn invalidate(cx: &Context) {
        cx.shared.invalidate::<Accounts>();
    }

    pub fn read(passwd: &Path, group: &Path) -> Result<Accounts> {
        Accounts::parse(&read_or_empty(passwd)?, &read_or_empty(group)?)
    }

    pub fn parse(passwd: &str, group: &str) -> Result<Accounts> {
        let mut a = Accounts::default();
        for (n, line) in records(passwd) {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() != 7 {
                bail!("/etc/passwd line {n}: expected 7 fields, found {}", f.len());
            }
            let (uid, gid) = (number(f[2], "passwd", n)?, number(f[3], "passwd", n)?);
            let e = UserEntry { name: f[0].into(), uid, gid, home: f[5].into(), shell: f[6].into() };
            // The first entry wins, as for getpwnam.
            a.user_index.entry(e.name.clone()).or_insert(a.users.len());
            a.users.push(e);
        }
        for (n, line) in records(group) {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() != 4 {
                bail!("/etc/group line {n}: expected 4 fields, found {}", f.len());
            }
            let members = f[3].split(',').filter(|m| !m.is_empty()).map(String::from).collect();
            let e = GroupEntry { name: f[0].into(), gid: number(f[2], "group", n)?, members };
            a.group_index.entry(e.name.clone()).or_insert(a.groups.len());
            a.groups.push(e);
        }
        Ok(a)
    }

    pub fn user(&self, name: &str) -> Option<&UserEntry> {
        self.user_index.get(name).map(|&i| &self.users[i])
    }

    pub fn user_by_uid(&self, uid: u32) -> Option<&UserEntry> {
        self.users.iter().find(|u| u.uid == uid)
    }

    pub fn group(&self, name: &str) -> Option<&GroupEntry> {
        self.group_index.get(name).map(|&i| &self.groups[i])
    }

    pub fn group_by_gid(&self, gid: u32) -> Option<&GroupEntry> {
        self.groups.iter().find(|g| g.gid == gid)
    }

    /// A group named by a role, by name or number.
    pub fn resolve_group(&self, name_or_gid: &str) -> Option<&GroupEntry> {
        match name_or_gid.parse::<u32>() {
            Ok(gid) => self.group_by_gid(gid),
            Err(_) => self.group(name_or_gid),
        }
    }

    /// Names of the groups listing `user` as a supplementary member, in file order.
    pub fn memberships(&self, user: &str) -> Vec<&str> {
        self.groups.iter().filter(|g| g.members.iter().any(|m| m == user)).map(|g| g.name.as_str()).collect()
    }
}

/// Account names as `useradd`/`groupadd` accept them everywhere (the portable subset: no
/// uppercase, no dots, no leading digit or dash), at most 32 characters.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok {
        bail!("`{name}` is not a valid {what} name (lowercase letters, digits, `_`, `-`, starting with a letter or `_`, at most 32)");
    }
    Ok(())
}

/// An id a role asks for: `u32::MAX` is `(uid_t)-1`, "no change" to the kernel.
pub fn check_id(what: &str, id: u32) -> Result<()> {
    if id == u32::MAX {
        bail!("{what} {id} is reserved");
    }
    Ok(())
}

/// A shadow-utils command (`useradd`, `groupmod`…). On a tree rather than the running system it
/// acts inside the tree with `--root` (image builds, tests), as planning reads the tree's files.
pub fn shadow_cmd(cx: &Context, program: &str) -> Cmd {
    let cmd = Cmd::new(program);
    if cx.is_live() {
        cmd
    } else {
        cmd.arg("--root").arg(cx.root.display().to_string())
    }
}

fn read_or_empty(p: &Path) -> Result<String> {
    match std::fs::read_to_string(p) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

/// Non-empty, non-comment lines with their 1-based numbers. NIS `+`/`-` entries are skipped.
fn records(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#') && !l.starts_with(['+', '-']))
}

fn number(s: &str, file: &str, line: usize) -> Result<u32> {
    s.parse().with_context(|| format!("/etc/{file} line {line}: `{s}` is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_and_group() {
        let a = Accounts::parse(
            "root:x:0:0:root:/root:/bin/bash\napp:x:998:997::/var/lib/app:/usr/sbin/nologin\n",
            "root:x:0:\napp:x:997:\nssl-cert:x:110:app,www-data\nadm:x:4:app\n",
        )
        .unwrap();
        let app = a.user("app").unwrap();
        assert_eq!((app.uid, app.gid, app.home.as_str()), (998, 997, "/var/lib/app"));
        assert_eq!(a.resolve_group("997").unwrap().name, "app");
        assert_eq!(a.memberships("app"), ["ssl-cert", "adm"]);
        assert!(Accounts::parse("bad:line\n", "").unwrap_err().to_string().contains("line 1"));
    }
}
