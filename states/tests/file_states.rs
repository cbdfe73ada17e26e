//! Plan and apply of the file-level modules against temporary roots.

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use states::engine::report::Status;
use support::*;

fn mode(p: &std::path::Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn file_create_change_mode_and_converge() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let role = r#"
[[state]]
id = "conf"
type = "file"
path = "/etc/app/app.conf"
template = "app.conf.hbs"
mode = "0640"
"#;
    let nodes =
        nodes(&cx, role, &[("app.conf.hbs", "greeting={{settings.greeting}} on {{facts.hostname}}\n")]).unwrap();
    let path = root.path().join("etc/app/app.conf");

    let r = check(&cx, &nodes);
    assert_eq!(r.pending, 1);
    let diff = r.states[0].changes[0].diff.as_deref().unwrap();
    assert!(diff.contains("+greeting=hello on node1"), "{diff}");
    assert!(!path.exists(), "check wrote the file");

    assert_eq!(apply(&cx, &nodes).changed, 1);
    assert_eq!(fs::read_to_string(&path).unwrap(), "greeting=hello on node1\n");
    assert_eq!(mode(&path), 0o640);
    assert_eq!(check(&cx, &nodes).pending, 0);

    // Content drift: a diff that names the line, then healed. The old version is not kept: at
    // 0640 others may not read it, so it may hold a secret (`a_private_file_replaced_keeps_no_copy`).
    fs::write(&path, "greeting=edited\n").unwrap();
    let r = check(&cx, &nodes);
    let diff = r.states[0].changes[0].diff.as_deref().unwrap();
    assert!(diff.contains("-greeting=edited") && diff.contains("+greeting=hello on node1"), "{diff}");
    assert_eq!(apply(&cx, &nodes).changed, 1);
    assert_eq!(fs::read_to_string(&path).unwrap(), "greeting=hello on node1\n");
    assert!(!root.path().join("var/lib/bootstrap/backup/etc/app/app.conf").exists());

    // Mode drift alone: no content rewrite, only chmod.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
    let ino = fs::metadata(&path).unwrap().ino();
    let r = check(&cx, &nodes);
    assert_eq!(r.states[0].changes.len(), 1);
    assert_eq!(r.states[0].changes[0].summary, "mode 0666 -> 0640");
    apply(&cx, &nodes);
    assert_eq!(mode(&path), 0o640);
    assert_eq!(fs::metadata(&path).unwrap().ino(), ino, "a chmod must not rewrite the file");
    assert_eq!(apply(&cx, &nodes).changed, 0);
}

#[test]
fn owner_and_group_are_managed() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    if !nix::unistd::Uid::effective().is_root() {
        panic!("this test needs root (to chown); CI runs as root");
    }
    let role = r#"
[[state]]
id = "owned"
type = "file"
path = "/srv/owned"
content = "x\n"
owner = "nobody"
group = "nogroup"
"#;
    let nodes = nodes(&cx, role, &[]).unwrap();
    apply(&cx, &nodes);
    let path = root.path().join("srv/owned");
    let m = fs::metadata(&path).unwrap();
    assert_eq!((m.uid(), m.gid()), (65534, 65534));
    std::os::unix::fs::chown(&path, Some(0), Some(0)).unwrap();
    let r = check(&cx, &nodes);
    assert_eq!(r.states[0].changes[0].summary, "owner 0:0 -> nobody:nogroup");
    apply(&cx, &nodes);
    let m = fs::metadata(&path).unwrap();
    assert_eq!((m.uid(), m.gid()), (65534, 65534));
    assert_eq!(check(&cx, &nodes).pending, 0);
}

#[test]
fn validator_rejection_keeps_the_old_file() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let path = root.path().join("etc/svc.conf");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, "good\n").unwrap();
    let role = r#"
[[state]]
id = "svc-conf"
type = "file"
path = "/etc/svc.conf"
content = "bad line\n"
validate = ["sh", "-c", "grep -q bad \"$1\" && echo \"syntax error in $1 at line 1\" >&2 && exit 1; exit 0", "validator"]
"#;
    let nodes = nodes(&cx, role, &[]).unwrap();
    let r = apply(&cx, &nodes);
    assert_eq!(status_of(&r, "svc-conf"), Status::Failed);
    let err = r.states[0].error.as_deref().unwrap();
    assert!(err.contains("syntax error in /etc/svc.conf at line 1"), "validator message, real path: {err}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "good\n");
    let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 1, "temp file left behind: {leftovers:?}");
    assert_eq!(r.exit_code(), 1);
}

#[test]
fn a_secret_files_validator_output_is_not_shown() {
    // The tools print the candidate, whole (`cat`) or split into characters (`od -c`), which no
    // scrubber recognises: only the file, the tool, its exit code and a plausible line remain.
    let canary = "Zq81xK-canary-PV3w";
    let root = tempfile::tempdir().unwrap();
    let cx = cx_with_secrets(root.path(), &[("api_token", canary)]);
    let role = |validate: &str| {
        format!("[[state]]\nid = \"token\"\ntype = \"file\"\npath = \"/etc/app/token.conf\"\ntemplate = \"token.hbs\"\nvalidate = {validate}\n")
    };
    let templates = [("token.hbs", "user = app\ntoken = {{secret \"api_token\"}}\n")];
    let cases = [
        (r#"["sh", "-c", "od -c \"$1\"; exit 1", "od"]"#, "`sh` (exit 1);"),
        (r#"["sh", "-c", "cat \"$1\" >&2; echo \"$1:2: bad token\" >&2; exit 3", "cat"]"#, "`sh` (exit 3) at line 2;"),
        // A number the candidate has no line for is not a line number (it may be the secret's).
        (r#"["sh", "-c", "echo \"bad value at line 81 in $1\" >&2; exit 1", "x"]"#, "`sh` (exit 1);"),
    ];
    for (validate, how) in cases {
        let r = apply(&cx, &nodes(&cx, &role(validate), &templates).unwrap());
        let err = r.states[0].error.as_deref().unwrap();
        let want = format!("/etc/app/token.conf rejected by {how} its output is not shown, the file holds a secret");
        assert!(err.contains(&want), "{validate}: {err}");
        for piece in canary.as_bytes().windows(3) {
            assert!(!err.contains(std::str::from_utf8(piece).unwrap()), "{validate}: {err}");
        }
        assert!(!err.contains("   ") && !err.contains("user = app"), "{validate}: {err}");
        assert!(!root.path().join("etc/app/token.conf").exists());
    }
}

#[test]
fn a_private_file_replaced_keeps_no_copy() {
    // A file that held a secret (root-only) now gets public content: the old content is not
    // kept in the backup directory, and an earlier copy goes too.
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let file = root.path().join("etc/app/app.conf");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, "password=canary-private-old\n").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    let kept = root.path().join("var/lib/bootstrap/backup/etc/app/app.conf");
    fs::create_dir_all(kept.parent().unwrap()).unwrap();
    fs::write(&kept, "password=canary-older\n").unwrap();
    let role = "[[state]]\nid = \"conf\"\ntype = \"file\"\npath = \"/etc/app/app.conf\"\ncontent = \"public\\n\"\nmode = \"0644\"\n";
    let nodes = nodes(&cx, role, &[]).unwrap();
    assert_eq!(apply(&cx, &nodes).changed, 1);
    assert_eq!(fs::read_to_string(&file).unwrap(), "public\n");
    assert!(!kept.exists(), "a copy of a private file was kept");
    let leaked = std::process::Command::new("grep").args(["-r", "canary-"]).arg(root.path()).output().unwrap();
    assert!(leaked.stdout.is_empty(), "{}", String::from_utf8_lossy(&leaked.stdout));
    // A file others may read is kept, root-only.
    fs::write(&file, "edited\n").unwrap();
    assert_eq!(apply(&cx, &nodes).changed, 1);
    assert_eq!(fs::read_to_string(&kept).unwrap(), "edited\n");
    assert_eq!(mode(&kept), 0o600);
}

#[test]
fn directory_symlink_and_absent() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    fs::create_dir_all(root.path().join("old/tree")).unwrap();
    fs::write(root.path().join("old/tree/f"), "x").unwrap();
    fs::write(root.path().join("stale.conf"), "old").unwrap();
    let role = r#"
[[state]]
id = "dir"
type = "directory"
path = "/srv/data/deep"
mode = "0750"

[[state]]
id = "link"
type = "symlink"
path = "/srv/current"
target = "/srv/data/deep"

[[state]]
id = "gone-file"
type = "absent"
path = "/stale.conf"

[[state]]
id = "gone-tree"
type = "absent"
path = "/old"
recursive = true
"#;
    let nodes = nodes(&cx, role, &[]).unwrap();
    let r = check(&cx, &nodes);
    assert_eq!(r.pending, 4);
    let r = apply(&cx, &nodes);
    assert_eq!((r.changed, r.failed), (4, 0), "{:?}", r.states);
    assert_eq!(mode(&root.path().join("srv/data/deep")), 0o750);
    assert_eq!(fs::read_link(root.path().join("srv/current")).unwrap().to_str(), Some("/srv/data/deep"));
    assert!(!root.path().join("stale.conf").exists());
    assert!(!root.path().join("old").exists());
    assert_eq!(fs::read_to_string(root.path().join("var/lib/bootstrap/backup/stale.conf")).unwrap(), "old");
    assert_eq!(check(&cx, &nodes).pending, 0);

    // Drift: the link retargeted, the directory's mode changed, the file back.
    fs::remove_file(root.path().join("srv/current")).unwrap();
    std::os::unix::fs::symlink("/elsewhere", root.path().join("srv/current")).unwrap();
    fs::set_permissions(root.path().join("srv/data/deep"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(root.path().join("stale.conf"), "back").unwrap();
    let r = check(&cx, &nodes);
    assert_eq!(r.pending, 3);
    let link = r.states.iter().find(|s| s.id == "link").unwrap();
    assert_eq!(link.changes[0].summary, "retarget /elsewhere -> /srv/data/deep");
    assert_eq!(apply(&cx, &nodes).changed, 3);
    assert_eq!(check(&cx, &nodes).pending, 0);
}

#[test]
fn absent_keeps_no_copy_of_a_private_file() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let file = root.path().join("etc/app/token");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, "canary-rotated-out-token").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    // An earlier run kept a copy of it.
    let kept = root.path().join("var/lib/bootstrap/backup/etc/app/token");
    fs::create_dir_all(kept.parent().unwrap()).unwrap();
    fs::write(&kept, "canary-older-token").unwrap();
    let nodes = nodes(&cx, "[[state]]\nid = \"x\"\ntype = \"absent\"\npath = \"/etc/app/token\"\n", &[]).unwrap();
    let r = check(&cx, &nodes);
    assert!(r.states[0].changes[0].summary.contains("private, so no copy is kept"), "{:?}", r.states[0].changes);
    assert_eq!(apply(&cx, &nodes).changed, 1);
    assert!(!file.exists());
    assert!(!kept.exists(), "the old copy of a private file stayed");
    let leaked = std::process::Command::new("grep").args(["-r", "canary-"]).arg(root.path()).output().unwrap();
    assert!(leaked.stdout.is_empty(), "{}", String::from_utf8_lossy(&leaked.stdout));
}

#[test]
fn absent_refuses_a_full_directory_without_recursive() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    fs::create_dir_all(root.path().join("data")).unwrap();
    fs::write(root.path().join("data/rows"), "1").unwrap();
    let nodes = nodes(&cx, "[[state]]\nid = \"x\"\ntype = \"absent\"\npath = \"/data\"\n", &[]).unwrap();
    let r = apply(&cx, &nodes);
    assert!(r.states[0].error.as_deref().unwrap().contains("recursive = true"));
    assert!(root.path().join("data/rows").exists());
}

#[test]
fn symlink_does_not_replace_a_file_unless_forced() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    fs::write(root.path().join("f"), "keep").unwrap();
    let nodes = nodes(&cx, "[[state]]\nid = \"l\"\ntype = \"symlink\"\npath = \"/f\"\ntarget = \"/x\"\n", &[]).unwrap();
    let r = apply(&cx, &nodes);
    assert!(r.states[0].error.as_deref().unwrap().contains("force = true"));
    assert_eq!(fs::read_to_string(root.path().join("f")).unwrap(), "keep");
}

#[test]
fn secret_content_is_redacted_and_private() {
    let root = tempfile::tempdir().unwrap();
    let canary = "canary-4b1d-secret";
    let cx = cx_with_secrets(root.path(), &[("db_password", canary)]);
    let role = r#"
[[state]]
id = "pgpass"
type = "file"
path = "/etc/app/db.conf"
template = "db.conf.hbs"
"#;
    let planned = nodes(&cx, role, &[("db.conf.hbs", "user=app\npassword={{secret \"db_password\"}}\n")]).unwrap();
    let r = check(&cx, &planned);
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains(canary), "{json}");
    assert!(json.contains("<redacted: 2 lines, 37 bytes>"), "{json}");
    let digest = states::engine::content::sha256_hex(format!("user=app\npassword={canary}\n").as_bytes());
    assert!(!json.contains(&digest[..12]), "no hash of the secret file: {json}");
    apply(&cx, &planned);
    let path = root.path().join("etc/app/db.conf");
    assert!(fs::read_to_string(&path).unwrap().contains(canary));
    assert_eq!(mode(&path), 0o600, "secret content defaults to 0600");
    fs::write(&path, "password=old\n").unwrap();
    let json = serde_json::to_string(&check(&cx, &planned)).unwrap();
    assert!(!json.contains(canary) && !json.contains("password=old"), "{json}");
    // A world-readable mode on the secret file is drift, healed to 0600.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let r = check(&cx, &planned);
    assert!(r.states[0].changes.iter().any(|c| c.summary == "mode 0644 -> 0600"), "{:?}", r.states[0].changes);
    // A stale backup (from before the file held a secret) goes with the next write.
    let kept = root.path().join("var/lib/bootstrap/backup/etc/app/db.conf");
    fs::create_dir_all(kept.parent().unwrap()).unwrap();
    fs::write(&kept, "password=older\n").unwrap();
    apply(&cx, &planned);
    assert_eq!(mode(&path), 0o600);
    // The replaced version held a secret (`password=old`): it is not kept.
    assert!(!kept.exists(), "a backup of a secret file outlives the rotation");
    assert_eq!(fs::read_to_string(&path).unwrap(), format!("user=app\npassword={canary}\n"));
    // A role can't ask for a secret file every user may read: refused before anything runs,
    // without the secret in the message.
    let templates = [("db.conf.hbs", "user=app\npassword={{secret \"db_password\"}}\n")];
    for wide in ["0644", "0604", "0666"] {
        let e = format!("{:#}", nodes_err(&cx, &format!("{role}mode = \"{wide}\"\n"), &templates));
        assert!(e.contains("holds a secret") && e.contains(wide) && !e.contains(canary), "{wide}: {e}");
    }
    // A group may read it (0640 for a service's group).
    assert!(nodes(&cx, &format!("{role}mode = \"0640\"\n"), &templates).is_ok());
}

#[test]
fn what_a_file_only_its_owner_reads_holds_is_in_no_diff() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx_with_secrets(root.path(), &[]);
    let role = r#"
[[state]]
id = "conf"
type = "file"
path = "/etc/app/app.conf"
content = "public=yes\n"
mode = "0644"
"#;
    let planned = nodes(&cx, role, &[]).unwrap();
    let path = root.path().join("etc/app/app.conf");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    // Someone put a token there by hand, root-only.
    fs::write(&path, "token=canary-hand-placed-0042\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let json = serde_json::to_string(&check(&cx, &planned)).unwrap();
    assert!(!json.contains("canary-hand-placed"), "{json}");
    assert!(json.contains("<redacted: 1 lines"), "{json}");
    // Readable by others: the diff is shown as usual.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let json = serde_json::to_string(&check(&cx, &planned)).unwrap();
    assert!(json.contains("-token=canary-hand-placed-0042"), "{json}");
    // A file the role itself keeps owner-only (a compose file) holds what the role wrote: its
    // drift is shown.
    let own = nodes(&cx, &role.replace("0644", "0600"), &[]).unwrap();
    fs::write(&path, "public=no\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let json = serde_json::to_string(&check(&cx, &own)).unwrap();
    assert!(json.contains("-public=no") && json.contains("+public=yes"), "{json}");
}

fn nodes_err(cx: &states::Context, role: &str, templates: &[(&str, &str)]) -> anyhow::Error {
    match nodes(cx, role, templates) {
        Ok(_) => panic!("accepted:\n{role}"),
        Err(e) => e,
    }
}

#[test]
fn source_url_with_sha256() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let artifact = root.path().join("artifact.bin");
    fs::write(&artifact, b"release-1\n").unwrap();
    let good = states::engine::content::sha256_hex(b"release-1\n");
    let bad = states::engine::content::sha256_hex(b"other\n");
    let role = |sum: &str| {
        format!("[[state]]\nid = \"dl\"\ntype = \"file\"\npath = \"/opt/tool\"\nsource = \"file://{}\"\nsha256 = \"{sum}\"\nmode = \"0755\"\n", artifact.display())
    };
    let wrong = nodes(&cx, &role(&bad), &[]).unwrap();
    let r = apply(&cx, &wrong);
    assert!(r.states[0].error.as_deref().unwrap().contains("expected"), "{:?}", r.states[0].error);
    assert!(!root.path().join("opt/tool").exists());

    let right = nodes(&cx, &role(&good), &[]).unwrap();
    assert_eq!(apply(&cx, &right).changed, 1);
    assert_eq!(fs::read(root.path().join("opt/tool")).unwrap(), b"release-1\n");
    assert_eq!(check(&cx, &right).pending, 0);
}

#[test]
fn source_over_http() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nbinary").unwrap();
    });
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let sum = states::engine::content::sha256_hex(b"binary");
    let role = format!("[[state]]\nid = \"dl\"\ntype = \"file\"\npath = \"/opt/b\"\nsource = \"http://127.0.0.1:{port}/b\"\nsha256 = \"{sum}\"\n");
    let nodes = nodes(&cx, &role, &[]).unwrap();
    let r = apply(&cx, &nodes);
    assert_eq!(r.changed, 1, "{:?}", r.states[0].error);
    server.join().unwrap();
    // Converged: the next plan compares hashes and downloads nothing (the server is gone).
    assert_eq!(check(&cx, &nodes).pending, 0);
}

#[test]
fn a_managed_file_is_never_written_through_a_linked_directory() {
    let root = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    // A directory someone else owns swapped for a link (to /etc/sudoers.d, say), and an
    // absolute link in the tree that would lead out of the root; both that user's (uid 1000:
    // a link root placed would be followed, inside the root).
    fs::create_dir_all(root.path().join("var/lib")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), root.path().join("var/lib/postgresql")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), root.path().join("opt")).unwrap();
    for l in ["var/lib/postgresql", "opt"] {
        std::os::unix::fs::lchown(root.path().join(l), Some(1000), None).unwrap();
    }
    let role = r#"
[[state]]
id = "inside"
type = "file"
path = "/var/lib/postgresql/15/main/conf.d/x.conf"
content = "canary\n"

[[state]]
id = "absolute"
type = "file"
path = "/opt/app.conf"
content = "canary\n"
"#;
    let nodes = nodes(&cx, role, &[]).unwrap();
    let r = apply(&cx, &nodes);
    assert_eq!(r.failed, 2, "{:?}", r.states);
    let err = r.states[0].error.as_deref().unwrap();
    assert!(err.contains("/var/lib/postgresql is a symbolic link"), "{err}");
    assert!(r.states[1].error.as_deref().unwrap().contains("/opt is a symbolic link"));
    assert!(fs::read_dir(elsewhere.path()).unwrap().next().is_none(), "something was written through the link");
}

#[test]
fn a_validator_running_as_another_user_reads_the_candidate() {
    // postgres checks its configuration as postgres: the candidate must be reachable by path,
    // not only through this process's descriptors.
    let root = tempfile::tempdir().unwrap();
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let cx = cx(root.path());
    let role = r#"
[[state]]
id = "checked"
type = "file"
path = "/etc/app/conf"
content = "checked by nobody\n"
mode = "0644"
validate = ["runuser", "-u", "nobody", "--", "grep", "-q", "checked by nobody", "{}"]
"#;
    let nodes = nodes(&cx, role, &[]).unwrap();
    let r = apply(&cx, &nodes);
    assert_eq!((r.changed, r.failed), (1, 0), "{:?}", r.states[0].error);
}

#[test]
fn no_directory_or_mode_change_goes_through_a_linked_directory() {
    let root = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    fs::create_dir_all(root.path().join("var/lib")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), root.path().join("var/lib/app")).unwrap();
    std::os::unix::fs::lchown(root.path().join("var/lib/app"), Some(1000), None).unwrap();
    // A file that exists beyond the link with the content the role wants: only its mode differs.
    fs::write(elsewhere.path().join("conf"), "same\n").unwrap();
    fs::set_permissions(elsewhere.path().join("conf"), fs::Permissions::from_mode(0o600)).unwrap();
    let role = r#"
[[state]]
id = "meta"
type = "file"
path = "/var/lib/app/conf"
content = "same\n"
mode = "0666"

[[state]]
id = "dir"
type = "directory"
path = "/var/lib/app/sub"
"#;
    let nodes = nodes(&cx, role, &[]).unwrap();
    let r = apply(&cx, &nodes);
    assert_eq!(r.failed, 2, "{:?}", r.states);
    for s in &r.states {
        assert!(s.error.as_deref().unwrap_or("").contains("/var/lib/app is a symbolic link"), "{:?}", s.error);
    }
    assert_eq!(mode(&elsewhere.path().join("conf")), 0o600, "a mode was changed through the link");
    assert!(!elsewhere.path().join("sub").exists(), "a directory was made through the link");
}

#[test]
fn a_link_root_placed_is_followed_inside_the_root() {
    // The operator's `/var/www -> /data/www`: absolute, so under the root, never the host's.
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    fs::create_dir_all(root.path().join("var")).unwrap();
    fs::create_dir_all(root.path().join("data/www")).unwrap();
    std::os::unix::fs::symlink("/data/www", root.path().join("var/www")).unwrap();
    let role = r#"
[[state]]
id = "page"
type = "file"
path = "/var/www/site/index.html"
content = "hello\n"
validate = ["grep", "-q", "hello", "{}"]

[[state]]
id = "dir"
type = "directory"
path = "/var/www/site/img"
"#;
    let nodes = nodes(&cx, role, &[]).unwrap();
    let r = apply(&cx, &nodes);
    assert_eq!((r.changed, r.failed), (2, 0), "{:?}", r.states);
    assert_eq!(fs::read_to_string(root.path().join("data/www/site/index.html")).unwrap(), "hello\n");
    assert!(root.path().join("data/www/site/img").is_dir());
    assert_eq!(check(&cx, &nodes).pending, 0);
}

#[test]
fn a_directory_of_another_user_holds_only_that_users_files() {
    // Debian's /etc/postgresql/15/main is postgres's (here uid 104).
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let main = root.path().join("etc/postgresql/15/main");
    fs::create_dir_all(&main).unwrap();
    for d in ["etc/postgresql", "etc/postgresql/15", "etc/postgresql/15/main"] {
        std::os::unix::fs::chown(root.path().join(d), Some(104), Some(104)).unwrap();
    }
    let role = r#"
[[state]]
id = "postgres-owned"
type = "file"
path = "/etc/postgresql/15/main/pg_hba.conf"
content = "local all all peer\n"
owner = "104"
group = "104"
mode = "0640"

[[state]]
id = "root-owned"
type = "file"
path = "/etc/postgresql/15/main/root.conf"
content = "x\n"
"#;
    let nodes = nodes(&cx, role, &[]).unwrap();
    let r = apply(&cx, &nodes);
    assert_eq!((r.changed, r.failed), (1, 1), "{:?}", r.states);
    assert_eq!(fs::metadata(main.join("pg_hba.conf")).unwrap().uid(), 104);
    let err = r.states[1].error.as_deref().unwrap();
    assert!(
        err.contains("/etc/postgresql is owned by user 104") && err.contains("(not root and not the file's owner)"),
        "{err}"
    );
    assert!(!main.join("root.conf").exists());
    // Only a mode differs now: fixed through the same walk.
    fs::set_permissions(main.join("pg_hba.conf"), fs::Permissions::from_mode(0o600)).unwrap();
    let r = apply(&cx, &nodes);
    assert_eq!((r.changed, r.failed), (1, 1), "{:?}", r.states);
    assert_eq!(mode(&main.join("pg_hba.conf")), 0o640);
}
