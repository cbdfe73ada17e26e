//! `user`: a local account for a service (a system account without a password by default), or
//! its absence. Observed from `/etc/passwd` and `/etc/group` (read once per run); changed with
//! `useradd`/`usermod`/`userdel`. No password is ever set: the account stays locked.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Deserialize;

use crate::sys::accounts::{check_id, check_name, shadow_cmd, Accounts};
use crate::engine::beneath;
use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State, Thing};
use crate::engine::build::{params, Builder};

pub const DEFAULT_SHELL: &str = "/usr/sbin/nologin";
/// A service's home holds its data: not for other users to read.
const HOME_MODE: u32 = 0o750;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    name: String,
    uid: Option<u32>,
    group: Option<String>,
    groups: Option<Vec<String>>,
    home: Option<String>,
    shell: Option<String>,
    /// A system account (id from the system range): chosen at creation only, never changed.
    #[serde(default = "yes")]
    system: bool,
    #[serde(default)]
    create_home: bool,
    #[serde(default)]
    absent: bool,
}

fn yes() -> bool {
    true
}

pub struct UserState {
    name: String,
    uid: Option<u32>,
    /// Primary group by name or gid; unset: a group named after the user.
    group: Option<String>,
    /// Exactly these supplementary groups when set; unset: left as they are.
    groups: Option<Vec<String>>,
    home: Option<String>,
    shell: String,
    system: bool,
    create_home: bool,
    absent: bool,
}

enum UserOp {
    Create,
    /// `usermod` arguments for one attribute; all of a plan's go into one call.
    Modify(Vec<String>),
    Delete,
    /// The home directory exists and belongs to the user.
    Home,
}

pub fn build(t: toml::Table, _b: &mut Builder) -> Result<Box<dyn State>> {
    Ok(Box::new(UserState::build(t)?))
}

impl UserState {
    pub fn build(t: toml::Table) -> Result<Self> {
        let p: Params = params(t)?;
        check_name("user", &p.name)?;
        if p.absent
            && (p.uid.is_some()
                || p.group.is_some()
                || p.groups.is_some()
                || p.home.is_some()
                || p.shell.is_some()
                || p.create_home)
        {
            bail!("an absent user takes only `name`");
        }
        if let Some(uid) = p.uid {
            check_id("uid", uid)?;
        }
        if let Some(g) = &p.group {
            if g.parse::<u32>().is_err() {
                check_name("group", g)?;
            }
        }
        for g in p.groups.iter().flatten() {
            check_name("group", g)?;
        }
        for (what, path) in [("home", &p.home), ("shell", &p.shell)] {
            if let Some(path) = path {
                if !path.starts_with('/') || path.contains([':', '\n']) || path.split('/').any(|c| c == "..") {
                    bail!("`{what}` must be an absolute path without `:` or `..`, not `{path}`");
                }
            }
        }
        if p.create_home && p.home.is_none() {
            bail!("`create_home` needs `home`");
        }
        let mut groups = p.groups;
        if let Some(g) = &mut groups {
            g.sort();
            g.dedup();
        }
        Ok(UserState {
            name: p.name,
            uid: p.uid,
            group: p.group,
            groups,
            home: p.home,
            shell: p.shell.unwrap_or_else(|| DEFAULT_SHELL.into()),
            system: p.system,
            create_home: p.create_home,
            absent: p.absent,
        })
    }

    fn plan_create(&self, a: &Accounts, plan: &mut Plan) {
        let mut what = vec![self.uid.map_or("uid chosen by useradd".into(), |u| format!("uid {u}"))];
        what.push(match &self.group {
            Some(g) => format!("group {g}"),
            None if a.group(&self.name).is_some() => format!("group {}", self.name),
            None => format!("new group {}", self.name),
        });
        if let Some(g) = self.groups.as_ref().filter(|g| !g.is_empty()) {
            what.push(format!("groups {}", g.join(",")));
        }
        if let Some(h) = &self.home {
            what.push(format!("home {h}"));
        }
        what.push(format!("shell {}", self.shell));
        let kind = if self.system { "system user" } else { "user" };
        plan.push(Change::new(format!("create {kind} {} ({})", self.name, what.join(", ")), UserOp::Create));
    }

    fn plan_modify(&self, a: &Accounts, u: &crate::sys::accounts::UserEntry, plan: &mut Plan) {
        let modify = |args: &[&str]| UserOp::Modify(args.iter().map(|s| s.to_string()).collect());
        // An existing account's uid changes only when the role names one: files outside the
        // home directory keep the old numeric owner, so this must never happen by accident.
        if let Some(uid) = self.uid.filter(|&uid| uid != u.uid) {
            plan.push(Change::new(
                format!(
                    "uid {} -> {uid} (set explicitly; usermod re-owns the home directory, files elsewhere keep uid {})",
                    u.uid, u.uid
                ),
                modify(&["--uid", &uid.to_string()]),
            ));
        }
        if let Some(want) = &self.group {
            if a.resolve_group(want).map(|g| g.gid) != Some(u.gid) {
                let have = a.group_by_gid(u.gid).map_or(u.gid.to_string(), |g| g.name.clone());
                plan.push(Change::new(format!("primary group {have} -> {want}"), modify(&["--gid", want])));
            }
        }
        if let Some(want) = &self.groups {
            let have = a.memberships(&self.name);
            let mut diff: Vec<String> =
                want.iter().filter(|g| !have.contains(&g.as_str())).map(|g| format!("+{g}")).collect();
            diff.extend(have.iter().filter(|g| !want.iter().any(|w| w == *g)).map(|g| format!("-{g}")));
            if !diff.is_empty() {
                plan.push(Change::new(format!("groups {}", diff.join(" ")), modify(&["--groups", &want.join(",")])));
            }
        }
        if let Some(home) = self.home.as_deref().filter(|h| *h != u.home) {
            plan.push(Change::new(format!("home {} -> {home}", u.home), modify(&["--home", home])));
        }
        if u.shell != self.shell {
            plan.push(Change::new(format!("shell {} -> {}", u.shell, self.shell), modify(&["--shell", &self.shell])));
        }
    }

    /// With `create_home`: the directory exists and is owned by the user (a home left behind by
    /// a deleted account may belong to an old uid). Looked at where `make_home` reaches it.
    fn plan_home(&self, cx: &Context, a: &Accounts, plan: &mut Plan) -> Result<()> {
        let Some(home) = self.home.as_deref().filter(|_| self.create_home) else { return Ok(()) };
        let found = beneath::find_parent(cx, Path::new(home), a.user(&self.name).map(|u| u.uid))?;
        let meta = match found.as_ref().map(|(dir, name)| fs::symlink_metadata(dir.join(name))) {
            Some(Ok(m)) => m,
            Some(Err(e)) if e.kind() != ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot inspect {home}"))
            }
            _ => {
                plan.push(Change::new(format!("create home directory {home}"), UserOp::Home));
                return Ok(());
            }
        };
        if !meta.is_dir() {
            bail!("home {home} exists and is not a directory");
        }
        let want = a.user(&self.name).map(|u| (u.uid, u.gid));
        if want != Some((meta.uid(), meta.gid())) {
            plan.push(Change::new(
                format!("home directory {home} owner {}:{} -> {}", meta.uid(), meta.gid(), self.name),
                UserOp::Home,
            ));
        }
        Ok(())
    }

    fn useradd(&self, cx: &Context, a: &Accounts) -> crate::engine::runner::Cmd {
        // Never `--password`: the account stays locked (`!` in shadow).
        let mut c = shadow_cmd(cx, "useradd").arg("--no-create-home");
        if self.system {
            c = c.arg("--system");
        }
        if let Some(uid) = self.uid {
            c = c.args(["--uid".to_string(), uid.to_string()]);
        }
        // Be explicit either way: useradd's own default depends on login.defs.
        c = match &self.group {
            Some(g) => c.args(["--gid", g]),
            None if a.group(&self.name).is_some() => c.args(["--gid", &self.name]),
            None => c.arg("--user-group"),
        };
        if let Some(g) = self.groups.as_ref().filter(|g| !g.is_empty()) {
            c = c.args(["--groups".to_string(), g.join(",")]);
        }
        if let Some(h) = &self.home {
            c = c.args(["--home-dir", h]);
        }
        c.args(["--shell", &self.shell])
    }

    /// Missing parents 0755 and the home 0750, reached without following a link (`beneath`);
    /// the directories on the way may be the user's own. The home is owned through a
    /// descriptor opened without following a link: one put there is not what gets the user.
    fn make_home(&self, cx: &Context) -> Result<()> {
        let home = self.home.as_deref().ok_or_else(|| anyhow!("no home"))?;
        let a = Accounts::get(cx)?;
        let u = a.user(&self.name).ok_or_else(|| anyhow!("user {} does not exist", self.name))?;
        let (dir, name) = beneath::open_parent(cx, Path::new(home), Some(0o755), Some(u.uid))?;
        let made = match fs::DirBuilder::new().mode(HOME_MODE).create(dir.join(&name)) {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e).with_context(|| format!("cannot create {home}")),
        };
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir.join(&name))
            .map_err(|e| anyhow!("cannot open {home} (is it a directory?): {e}"))?;
        std::os::unix::fs::fchown(&opened, Some(u.uid), Some(u.gid))
            .with_context(|| format!("cannot change the owner of {home}"))?;
        if made {
            // The umask may have narrowed it.
            opened
                .set_permissions(fs::Permissions::from_mode(HOME_MODE))
                .with_context(|| format!("cannot set the mode of {home}"))?;
        }
        Ok(())
    }
}

impl State for UserState {
    fn claims(&self) -> Vec<Claim> {
        vec![Claim::new(Thing::User(self.name.clone()))]
    }

    fn target(&self) -> String {
        self.name.clone()
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        let a = Accounts::get(cx)?;
        let mut plan = Plan::default();
        let have = a.user(&self.name);
        if self.absent {
            if let Some(u) = have {
                plan.push(Change::new(
                    format!("delete user {} (uid {}; home directory kept)", u.name, u.uid),
                    UserOp::Delete,
                ));
            }
            return Ok(plan);
        }
        // A uid taken by another account would make useradd/usermod fail; say so while planning.
        if let Some(other) = self.uid.and_then(|uid| a.user_by_uid(uid)).filter(|u| u.name != self.name) {
            bail!("uid {} is already used by user `{}`", other.uid, other.name);
        }
        match have {
            None => self.plan_create(&a, &mut plan),
            Some(u) => self.plan_modify(&a, u, &mut plan),
        }
        self.plan_home(cx, &a, &mut plan)?;
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        let result = (|| {
            let a = Accounts::get(cx)?;
            let mut usermod: Vec<String> = Vec::new();
            for op in plan.ops::<UserOp>() {
                match op {
                    UserOp::Create => drop(cx.runner.check(&self.useradd(cx, &a).arg(&self.name))?),
                    UserOp::Delete => drop(cx.runner.check(&shadow_cmd(cx, "userdel").arg(&self.name))?),
                    UserOp::Modify(args) => usermod.extend(args.iter().cloned()),
                    UserOp::Home => {}
                }
            }
            if !usermod.is_empty() {
                cx.runner.check(&shadow_cmd(cx, "usermod").args(usermod).arg(&self.name))?;
            }
            Accounts::invalidate(cx);
            if plan.ops::<UserOp>().any(|op| matches!(op, UserOp::Home)) {
                self.make_home(cx)?;
            }
            Ok(())
        })();
        Accounts::invalidate(cx);
        result
    }
}
