//! `user` and `group`: planning against fixture `/etc/passwd` and `/etc/group` under a
//! temporary root, the exact commands with a fake runner, and the real shadow tools (`--root`)
//! converging a tree.

mod fake;
mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use states::kinds::group::GroupState;
use states::kinds::user::UserState;
use states::{Context, State};
use support::*;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:998:998::/var/lib/app:/bin/sh
bob:x:1500:1500::/home/bob:/bin/bash
";
const GROUP: &str = "root:x:0:
daemon:x:1:
adm:x:4:app
app:x:998:
ssl-cert:x:110:bob
web:x:997:
bob:x:1500:
";

fn fixture() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("etc")).unwrap();
    fs::write(root.path().join("etc/passwd"), PASSWD).unwrap();
    fs::write(root.path().join("etc/group"), GROUP).unwrap();
    root
}

fn user(params: &str) -> anyhow::Result<UserState> {
    UserState::build(toml::from_str(params).unwrap())
}

fn group(params: &str) -> anyhow::Result<GroupState> {
    GroupState::build(toml::from_str(params).unwrap())
}

fn summaries(cx: &Context, s: &dyn State) -> Vec<String> {
    s.plan(cx).unwrap().changes.iter().map(|c| c.summary.clone()).collect()
}

#[test]
fn user_plan_lists_each_differing_attribute() {
    let root = fixture();
    let cx = cx(root.path());
    let s = user(
        r#"name = "app"
group = "web"
groups = ["ssl-cert"]
home = "/srv/app""#,
    )
    .unwrap();
    assert_eq!(
        summaries(&cx, &s),
        [
            "primary group app -> web",
            "groups +ssl-cert -adm",
            "home /var/lib/app -> /srv/app",
            "shell /bin/sh -> /usr/sbin/nologin"
        ]
    );
    // Converged, by name or by gid; attributes not given are left alone (uid, groups, home).
    let same = r#"name = "app"
group = "998"
groups = ["adm"]
home = "/var/lib/app"
shell = "/bin/sh""#;
    assert!(summaries(&cx, &user(same).unwrap()).is_empty());
    assert!(summaries(&cx, &user(r#"name = "daemon""#).unwrap()).is_empty());
    assert_eq!(summaries(&cx, &user("name = \"app\"\ngroups = []\nshell = \"/bin/sh\"").unwrap()), ["groups -adm"]);
}

#[test]
fn a_uid_changes_only_when_given_explicitly() {
    let root = fixture();
    let cx = cx(root.path());
    // Not given: the existing uid 998 is kept, no change planned.
    assert!(summaries(&cx, &user("name = \"app\"\nshell = \"/bin/sh\"").unwrap()).is_empty());
    let s = user("name = \"app\"\nuid = 1600\nshell = \"/bin/sh\"").unwrap();
    let plan = summaries(&cx, &s);
    assert_eq!(plan.len(), 1);
    assert!(plan[0].starts_with("uid 998 -> 1600 (set explicitly;") && plan[0].contains("keep uid 998"), "{plan:?}");
    // A uid another account has is refused while planning.
    let e = user("name = \"app\"\nuid = 1500").unwrap().plan(&cx).err().unwrap().to_string();
    assert_eq!(e, "uid 1500 is already used by user `bob`");
    // Same for groups.
    assert!(summaries(&cx, &group(r#"name = "web""#).unwrap()).is_empty());
    assert!(summaries(&cx, &group("name = \"web\"\ngid = 997").unwrap()).is_empty());
    let plan = summaries(&cx, &group("name = \"web\"\ngid = 2000").unwrap());
    assert!(plan[0].starts_with("gid 997 -> 2000 (set explicitly;"), "{plan:?}");
    let e = group("name = \"web\"\ngid = 110").unwrap().plan(&cx).err().unwrap().to_string();
    assert_eq!(e, "gid 110 is already used by group `ssl-cert`");
}

#[test]
fn missing_and_absent_accounts() {
    let root = fixture();
    let cx = cx(root.path());
    let s = user(
        r#"name = "svc"
home = "/var/lib/svc"
create_home = true
groups = ["ssl-cert"]"#,
    )
    .unwrap();
    assert_eq!(
        summaries(&cx, &s),
        [
            "create system user svc (uid chosen by useradd, new group svc, groups ssl-cert, home /var/lib/svc, shell /usr/sbin/nologin)",
            "create home directory /var/lib/svc"
        ]
    );
    // A group named after the user already exists: it becomes the primary group.
    let s = user("name = \"web\"\nuid = 1700\nsystem = false").unwrap();
    assert_eq!(summaries(&cx, &s), ["create user web (uid 1700, group web, shell /usr/sbin/nologin)"]);
    assert_eq!(summaries(&cx, &group("name = \"svc\"\ngid = 990").unwrap()), ["create system group svc (gid 990)"]);
    assert_eq!(
        summaries(&cx, &user("name = \"bob\"\nabsent = true").unwrap()),
        ["delete user bob (uid 1500; home directory kept)"]
    );
    assert!(summaries(&cx, &user("name = \"nobody2\"\nabsent = true").unwrap()).is_empty());
    assert_eq!(summaries(&cx, &group("name = \"web\"\nabsent = true").unwrap()), ["delete group web (gid 997)"]);
}

#[test]
fn bad_params_are_clear_errors() {
    let ue = |p: &str| user(p).err().map(|e| format!("{e:#}")).unwrap_or_else(|| panic!("accepted: {p}"));
    let ge = |p: &str| group(p).err().map(|e| format!("{e:#}")).unwrap_or_else(|| panic!("accepted: {p}"));
    assert!(ue("name = \"app\"\npassword = \"x\"").contains("unknown field `password`"));
    assert!(ue("name = \"App\"").contains("`App` is not a valid user name"));
    assert!(ue("name = \"1app\"").contains("not a valid user name"));
    assert!(ue("name = \"app\"\ngroups = [\"a,b\"]").contains("`a,b` is not a valid group name"));
    assert!(ue("name = \"app\"\nhome = \"var/lib/app\"").contains("`home` must be an absolute path"));
    assert!(ue("name = \"app\"\nshell = \"/bin/sh:x\"").contains("`shell` must be an absolute path"));
    assert!(ue("name = \"app\"\ncreate_home = true").contains("`create_home` needs `home`"));
    assert!(ue("name = \"app\"\nabsent = true\nuid = 5").contains("an absent user takes only `name`"));
    assert!(ue("name = \"app\"\nuid = -1").contains("invalid value"));
    assert!(ue("name = \"app\"\nuid = 4294967295").contains("uid 4294967295 is reserved"));
    assert!(ue("uid = 5").contains("missing field `name`"));
    assert!(ge("name = \"web\"\nmembers = []").contains("unknown field `members`"));
    assert!(ge("name = \"web\"\ngid = 5\nabsent = true").contains("`gid` makes no sense"));
    assert!(ge("name = \"Web\"").contains("not a valid group name"));
}

#[test]
fn apply_runs_one_command_per_tool_and_never_a_password() {
    let root = fixture();
    let (cx, log) = fake::cx(root.path(), |_| fake::ok());
    let r = root.path().display().to_string();

    let s = user("name = \"svc\"\nuid = 1600\ngroups = [\"ssl-cert\", \"adm\"]\nhome = \"/srv/svc\"").unwrap();
    let plan = s.plan(&cx).unwrap();
    s.apply(&cx, &plan).unwrap();
    assert_eq!(
        log.lines(),
        [format!("useradd --root {r} --no-create-home --system --uid 1600 --user-group --groups adm,ssl-cert --home-dir /srv/svc --shell /usr/sbin/nologin svc")]
    );

    log.clear();
    let s = user("name = \"app\"\ngroup = \"web\"\nhome = \"/srv/app\"").unwrap();
    let plan = s.plan(&cx).unwrap();
    assert_eq!(plan.changes.len(), 3);
    s.apply(&cx, &plan).unwrap();
    assert_eq!(log.lines(), [format!("usermod --root {r} --gid web --home /srv/app --shell /usr/sbin/nologin app")]);

    log.clear();
    let s = user("name = \"bob\"\nabsent = true").unwrap();
    s.apply(&cx, &s.plan(&cx).unwrap()).unwrap();
    let s = group("name = \"svc\"\ngid = 990").unwrap();
    s.apply(&cx, &s.plan(&cx).unwrap()).unwrap();
    assert_eq!(log.lines(), [format!("userdel --root {r} bob"), format!("groupadd --root {r} --system --gid 990 svc")]);

    for c in log.cmds() {
        assert!(!c.args.iter().any(|a| a == "-p" || a.starts_with("--password")), "{}", c.display());
    }
}

#[test]
fn a_failing_tool_is_reported_with_its_message() {
    let root = fixture();
    let (cx, _log) = fake::cx(root.path(), |_| fake::fail(6, "usermod: group 'nosuch' does not exist\n"));
    let s = user("name = \"app\"\ngroup = \"nosuch\"\nshell = \"/bin/sh\"").unwrap();
    let plan = s.plan(&cx).unwrap();
    assert_eq!(plan.changes[0].summary, "primary group app -> nosuch");
    let e = s.apply(&cx, &plan).unwrap_err().to_string();
    assert!(e.contains("exit 6") && e.contains("group 'nosuch' does not exist"), "{e}");
}

/// A tree with the minimal account files a Debian system has.
fn shadow_tree() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc");
    fs::create_dir_all(&etc).unwrap();
    fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    fs::write(etc.join("group"), "root:x:0:\n").unwrap();
    fs::write(etc.join("shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    fs::write(etc.join("gshadow"), "root:*::\n").unwrap();
    root
}

fn read(root: &Path, f: &str) -> String {
    fs::read_to_string(root.join(f)).unwrap()
}

/// The real `groupadd`/`useradd`/`usermod` (with `--root`) through the engine: converges, the
/// second run changes nothing, drift (a user deleted by hand, a shell changed) heals.
#[test]
fn real_shadow_tools_converge_a_tree() {
    if !nix::unistd::Uid::effective().is_root() {
        panic!("this test needs root (useradd --root chroots); CI runs as root");
    }
    let root = shadow_tree();
    // Observations are shared within a run: every run gets a fresh context, as on a node.
    let run = || cx(root.path());
    let cx = run();
    let role = r#"
[[state]]
id = "grp"
type = "group"
name = "appgrp"
gid = 1900

[[state]]
id = "usr"
type = "user"
name = "appsvc"
group = "appgrp"
groups = ["appgrp"]
home = "/var/lib/appsvc"
create_home = true
requires = ["grp"]
"#;
    let nodes = nodes(&cx, role, &[]).unwrap();
    let r = apply(&run(), &nodes);
    assert_eq!((r.changed, r.failed), (2, 0), "{:#?}", r.states);
    let passwd = read(root.path(), "etc/passwd");
    assert!(passwd.contains(":1900::/var/lib/appsvc:/usr/sbin/nologin\n"), "{passwd}");
    assert!(read(root.path(), "etc/group").contains("appgrp:x:1900:appsvc\n"));
    let shadow = read(root.path(), "etc/shadow");
    assert!(shadow.lines().any(|l| l.starts_with("appsvc:!:")), "no password, locked: {shadow}");
    let home = fs::metadata(root.path().join("var/lib/appsvc")).unwrap();
    assert_eq!((home.gid(), home.mode() & 0o7777), (1900, 0o750));
    assert_eq!(apply(&run(), &nodes).changed, 0);
    assert_eq!(check(&run(), &nodes).pending, 0);

    // Drift by hand: the shell changed, then the account deleted (its home stays).
    let by_hand = |args: &[&str]| {
        let st = std::process::Command::new(args[0])
            .args(["--root", root.path().to_str().unwrap()])
            .args(&args[1..])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{args:?}");
    };
    by_hand(&["usermod", "--shell", "/bin/bash", "appsvc"]);
    let r = check(&run(), &nodes);
    assert_eq!(r.states[1].changes[0].summary, "shell /bin/bash -> /usr/sbin/nologin");
    by_hand(&["userdel", "appsvc"]);
    let r = check(&run(), &nodes);
    assert_eq!(r.pending, 1);
    assert!(r.states[1].changes[0].summary.starts_with("create system user appsvc"), "{:?}", r.states[1].changes);
    let r = apply(&run(), &nodes);
    assert_eq!((r.changed, r.failed), (1, 0), "{:#?}", r.states);
    assert!(read(root.path(), "etc/passwd").contains("appsvc:x:"));
    assert_eq!(check(&run(), &nodes).pending, 0);
}

#[test]
fn a_home_is_made_beneath_the_root_without_following_a_link() {
    let root = fixture();
    let cx = cx(root.path());
    // `app` as the fixture has it, but for its home: nothing for the shadow tools to do.
    let s = user("name = \"app\"\nhome = \"/var/lib/app\"\nshell = \"/bin/sh\"\ncreate_home = true").unwrap();

    // /var/lib is a link its user (uid 1000) put there: neither planned nor made through.
    let elsewhere = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("var")).unwrap();
    let link = root.path().join("var/lib");
    std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(1000), None).unwrap();
    let err = format!("{:#}", s.plan(&cx).err().expect("a plan through the link"));
    assert!(err.contains("/var/lib is a symbolic link owned by user 1000"), "{err}");
    fs::remove_file(&link).unwrap();
    let plan = s.plan(&cx).unwrap();
    assert_eq!(
        plan.changes.iter().map(|c| c.summary.as_str()).collect::<Vec<_>>(),
        ["create home directory /var/lib/app"]
    );
    std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(1000), None).unwrap();
    let err = format!("{:#}", s.apply(&cx, &plan).expect_err("a home made through the link"));
    assert!(err.contains("/var/lib is a symbolic link"), "{err}");
    assert!(fs::read_dir(elsewhere.path()).unwrap().next().is_none(), "something was made through the link");

    // Without it: the missing parent 0755 (others pass through), the home 0750, the user's.
    fs::remove_file(&link).unwrap();
    s.apply(&cx, &plan).unwrap();
    let mode = |p: &str| fs::metadata(root.path().join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("var/lib"), 0o755);
    let home = fs::metadata(root.path().join("var/lib/app")).unwrap();
    assert_eq!((home.uid(), home.gid(), home.mode() & 0o7777), (998, 998, 0o750));
    assert!(s.plan(&cx).unwrap().changes.is_empty());
}
