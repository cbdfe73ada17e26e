//! `ssh_key` with the real `ssh-keygen` under a temporary root: a key made once, private 0600
//! and public 0644, never replaced; a missing public half remade from the private one; mode
//! drift shown and healed; a dry run changes nothing. And `for_each`: one state per item, ids
//! `ID.ITEM`, `requires` on the looped id waiting for all of them.

mod fake;
mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use states::engine::report::Status;
use support::*;

const ROLE: &str = r#"
[[state]]
id = "key"
type = "ssh_key"
path = "/etc/bootstrap/sshfs/id_ed25519"
comment = "node1 shared storage"
"#;

fn mode(p: &std::path::Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn a_key_is_made_once_kept_and_healed() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let nodes = nodes(&cx, ROLE, &[]).unwrap();
    let private = root.path().join("etc/bootstrap/sshfs/id_ed25519");
    let public = root.path().join("etc/bootstrap/sshfs/id_ed25519.pub");

    let r = check(&cx, &nodes);
    assert_eq!(status_of(&r, "key"), Status::Pending);
    assert!(!private.exists(), "a dry run made a key");

    let r = apply(&cx, &nodes);
    assert_eq!(status_of(&r, "key"), Status::Changed, "{r:?}");
    assert_eq!((mode(&private), mode(&public)), (0o600, 0o644));
    assert_eq!(mode(private.parent().unwrap()), 0o700);
    let key = fs::read(&private).unwrap();
    let pubkey = fs::read_to_string(&public).unwrap();
    assert!(pubkey.starts_with("ssh-ed25519 ") && pubkey.trim_end().ends_with("node1 shared storage"), "{pubkey}");
    let leftovers: Vec<_> = fs::read_dir(private.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "work files left: {leftovers:?}");
    // The report shows paths, never the key.
    let shown = serde_json::to_string(&r).unwrap();
    let body: String = String::from_utf8(key.clone()).unwrap().lines().filter(|l| !l.starts_with("---")).collect();
    assert!(!shown.contains(&body[216..256]), "the private key reached the report");

    // Converged; then the public half lost and the private key's mode widened: both healed,
    // the key itself untouched.
    assert_eq!(status_of(&apply(&cx, &nodes), "key"), Status::Unchanged);
    fs::remove_file(&public).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o644)).unwrap();
    let r = check(&cx, &nodes);
    let summaries: Vec<String> = r.states[0].changes.iter().map(|c| c.summary.clone()).collect();
    assert!(summaries.iter().any(|s| s.contains("mode 0644 -> 0600")), "{summaries:?}");
    assert!(summaries.iter().any(|s| s.contains("from the private key")), "{summaries:?}");
    apply(&cx, &nodes);
    assert_eq!(fs::read(&private).unwrap(), key, "the key was replaced");
    assert_eq!(mode(&private), 0o600);
    assert_eq!(fs::read_to_string(&public).unwrap(), pubkey, "the public key remade differs (a doubled comment?)");
    assert_eq!(status_of(&check(&cx, &nodes), "key"), Status::Unchanged);

    // A key file that holds no key (emptied by a crash): made again, and it works.
    fs::write(&private, "").unwrap();
    let r = check(&cx, &nodes);
    assert!(r.states[0].changes[0].summary.contains("holds no OpenSSH private key"), "{:?}", r.states[0].changes);
    apply(&cx, &nodes);
    assert_ne!(fs::read(&private).unwrap(), key);
    let ok = std::process::Command::new("ssh-keygen").arg("-y").arg("-f").arg(&private).output().unwrap();
    assert!(ok.status.success());
    assert_eq!(status_of(&check(&cx, &nodes), "key"), Status::Unchanged);
}

#[test]
fn for_each_makes_one_state_per_item_and_requires_waits_for_all() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let role = r#"
[[state]]
id = "vol"
type = "directory"
for_each = ["uploads", "cache"]
path = "/srv/share/{{item}}"
mode = "0750"

[[state]]
id = "marker"
type = "file"
path = "/srv/share/ready"
content = "ok\n"
requires = ["vol"]

[[state]]
id = "none"
type = "directory"
for_each = []
path = "/srv/never/{{item}}"
"#;
    let nodes = nodes(&cx, role, &[]).unwrap();
    let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["vol.uploads", "vol.cache", "marker"]);
    assert_eq!(nodes[2].requires, ["vol.uploads", "vol.cache"]);
    apply(&cx, &nodes);
    assert_eq!(mode(&root.path().join("srv/share/uploads")), 0o750);
    assert!(root.path().join("srv/share/cache").is_dir());
    // `{{item}}` outside a loop, a bad item, an item's id a role names itself: refused, with the line.
    let err = support::nodes(&cx, "[[state]]\nid = \"x\"\ntype = \"directory\"\npath = \"/a/{{item}}\"\n", &[])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("item"), "{err}");
    let bad = "[[state]]\nid = \"x\"\ntype = \"directory\"\nfor_each = [\"../etc\"]\npath = \"/a/{{item}}\"\n";
    let err = support::nodes(&cx, bad, &[]).err().unwrap().to_string();
    assert!(err.contains("line 4") && err.contains("not a plain name"), "{err}");
    let twice = "[[state]]\nid = \"x\"\ntype = \"directory\"\nfor_each = [\"a\"]\npath = \"/a/{{item}}\"\n\n\
                 [[state]]\nid = \"x.a\"\ntype = \"directory\"\npath = \"/b\"\n";
    let err = support::nodes(&cx, twice, &[]).err().unwrap().to_string();
    assert!(err.contains("`x.a` is defined twice"), "{err}");
}
