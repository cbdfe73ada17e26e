//! The storage node's generated SSH files: the sshd drop-in checked by the role's own
//! validator (the real `sshd -t` and `sshd -T` with the whole configuration), which must also
//! refuse a file that does not confine the account or confines everyone; and the
//! `authorized_keys` template, which takes only plain keys from DNS, each bound to its address.

use std::process::Command;

use serde_json::json;
use states::engine::secrets::Secrets;
use states::role::template::{Data, Templates};

const DROP_IN: &str = include_str!("../../roles/templates/sshd-share.conf.hbs");
const AUTHORIZED: &str = include_str!("../../roles/templates/sshfs-authorized-keys.hbs");
const ROLE: &str = include_str!("../../roles/storage.toml");
const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

/// The `validate` command of the role's sshd drop-in state, run on `text`.
fn validate(text: &str) -> (bool, String) {
    let role: toml::Table = toml::from_str(ROLE).unwrap();
    let state = role["state"].as_array().unwrap().iter().find(|s| s["id"].as_str() == Some("storage-sshd")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("candidate.conf");
    std::fs::write(&file, text).unwrap();
    let argv: Vec<String> = state["validate"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().replace("{}", file.to_str().unwrap()))
        .collect();
    let out = Command::new(&argv[0]).args(&argv[1..]).output().expect("sh");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_drop_in_passes_sshd_and_the_validator_refuses_what_would_not_confine() {
    assert!(
        std::path::Path::new("/usr/sbin/sshd").exists(),
        "sshd is not installed (scripts/setup installs openssh-server)"
    );
    let (ok, err) = validate(DROP_IN);
    assert!(ok, "the shipped drop-in was refused: {err}");
    let (ok, err) = validate("Match User sftp-share\n    PermitTTY maybe\n");
    assert!(!ok, "a broken file passed");
    assert!(err.contains("maybe") || err.contains("line"), "{err}");
    let (ok, err) = validate("Match User sftp-share\n    PermitTTY no\n");
    assert!(!ok && err.contains("not confined"), "a file that forces nothing passed: {err}");
    let everyone = format!("{DROP_IN}Match all\n    ForceCommand internal-sftp\n");
    let (ok, err) = validate(&everyone);
    assert!(!ok && err.contains("reaches other users"), "a file that confines everyone passed: {err}");
    let (ok, err) = validate(&DROP_IN.replace("    ChrootDirectory /srv/share\n", ""));
    assert!(!ok && err.contains("no 'chrootdirectory /srv/share'"), "a file without the chroot passed: {err}");
}

#[test]
fn authorized_keys_hold_only_plain_keys_each_from_its_address() {
    let mut t = Templates::new(&Secrets::default());
    t.add("a", AUTHORIZED).unwrap();
    let clients = json!([
        { "host": "app1.lab.test.", "address": "198.18.0.11", "txt": [format!("{KEY} app1 shared storage")] },
        { "host": "app2.lab.test.", "address": "198.18.0.12", "txt": [] },
        { "host": "evil.lab.test.", "address": "198.18.0.13", "txt": [format!("{KEY}\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAsmuggled")] },
    ]);
    let out = t.render("a", &Data::new(json!({ "peers": { "sshfs_clients": clients } }))).unwrap();
    let text = String::from_utf8(out.bytes).unwrap();
    let keys: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    assert_eq!(keys, [format!("restrict,from=\"198.18.0.11\" {KEY} app1.lab.test.")], "{text}");
}
