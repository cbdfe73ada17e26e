//! `dns_record` against a real knotd on 127.0.0.1 (RFC 2136 updates signed with TSIG): plan,
//! apply, re-plan empty; A/AAAA replace the node's RRset, SRV adds beside other nodes'
//! records; `absent` and `decommission` remove exactly this SRV record, or the whole set of a
//! name the node owns; a TXT record follows a file, never a private one; a wrong key, a refused
//! update and a dead server are clear errors that never quote the key; bad parameters are
//! refused when the role compiles.

mod local_knot;
mod support;

use std::time::{Duration, Instant};

use local_knot::{Knot, KEY_NAME, KEY_SECRET};
use states::engine::report::Status;
use states::engine::secrets::Secrets;
use states::pipeline;
use states::role::DirSource;
use states::Context;
use support::*;

const ZONE: &str = "lab.test";

fn cx_with_key(root: &std::path::Path, secret: &str) -> Context {
    cx_with_secrets(root, &[("dns_tsig", secret)])
}

/// A role with one dns_record state; `extra` is more TOML for it.
fn role(knot: &Knot, name: &str, rtype: &str, value: &str, extra: &str) -> String {
    format!(
        r#"
[[state]]
id = "rec"
type = "dns_record"
server = "{}"
zone = "{ZONE}"
name = "{name}"
record_type = "{rtype}"
value = "{value}"
tsig_key_name = "{KEY_NAME}"
tsig_secret = "dns_tsig"
{extra}
"#,
        knot.addr
    )
}

fn summaries(r: &states::engine::report::RunReport) -> Vec<String> {
    r.states.iter().flat_map(|s| s.changes.iter().map(|c| c.summary.clone())).collect()
}

#[test]
fn a_record_registers_replaces_and_deregisters() {
    let knot = Knot::start(ZONE, &["app1 60 IN A 127.0.0.99"]);
    let dir = tempfile::tempdir().unwrap();
    let cx = cx_with_key(dir.path(), KEY_SECRET);
    let nodes = nodes(&cx, &role(&knot, "app1", "A", "127.0.0.10", ""), &[]).unwrap();

    // A dry run names the change and leaves the server alone.
    let r = check(&cx, &nodes);
    assert_eq!(status_of(&r, "rec"), Status::Pending);
    assert_eq!(summaries(&r), ["register app1.lab.test. A 127.0.0.10 (replacing 127.0.0.99)"]);
    assert_eq!(knot.query("app1.lab.test", "A"), ["127.0.0.99"]);

    // Apply replaces the node's RRset; the engine's second plan is empty.
    let r = apply(&cx, &nodes);
    assert_eq!(status_of(&r, "rec"), Status::Changed, "{:?}", r.states[0].error);
    assert_eq!(knot.query("app1.lab.test", "A"), ["127.0.0.10"]);
    let r = apply(&cx, &nodes);
    assert_eq!(status_of(&r, "rec"), Status::Unchanged);

    // Drift (deleted in DNS, or a TTL changed by hand) is planned and healed.
    knot.update(&["delete app1.lab.test. A"]);
    assert_eq!(summaries(&check(&cx, &nodes)), ["register app1.lab.test. A 127.0.0.10"]);
    knot.update(&["add app1.lab.test. 300 A 127.0.0.10"]);
    assert_eq!(summaries(&check(&cx, &nodes)), ["set the TTL of app1.lab.test. A 127.0.0.10 to 60 (is 300)"]);
    assert_eq!(status_of(&apply(&cx, &nodes), "rec"), Status::Changed);
    assert_eq!(knot.query("app1.lab.test", "A"), ["127.0.0.10"]);

    // absent = true removes it, and only it.
    let gone = nodes_absent(&cx, &knot);
    let r = apply(&cx, &gone);
    assert_eq!(summaries(&r), ["deregister app1.lab.test. A 127.0.0.10"]);
    assert!(knot.query("app1.lab.test", "A").is_empty());
    assert_eq!(status_of(&apply(&cx, &gone), "rec"), Status::Unchanged);
}

fn nodes_absent(cx: &Context, knot: &Knot) -> Vec<states::engine::run::Node> {
    nodes(cx, &role(knot, "app1", "A", "127.0.0.10", "absent = true"), &[]).unwrap()
}

#[test]
fn srv_adds_beside_other_nodes_and_deregister_removes_only_its_own() {
    let knot = Knot::start(ZONE, &["_https._tcp 60 IN SRV 0 0 443 app2", "app2 60 IN A 127.0.0.12"]);
    let dir = tempfile::tempdir().unwrap();
    let cx = cx_with_key(dir.path(), KEY_SECRET);
    let nodes = nodes(&cx, &role(&knot, "_https._tcp", "SRV", "0 0 443 app1", ""), &[]).unwrap();
    let r = apply(&cx, &nodes);
    assert_eq!(summaries(&r), ["register _https._tcp.lab.test. SRV 0 0 443 app1.lab.test."]);
    assert_eq!(knot.query("_https._tcp.lab.test", "SRV"), ["0 0 443 app1.lab.test.", "0 0 443 app2.lab.test."]);
    assert_eq!(status_of(&apply(&cx, &nodes), "rec"), Status::Unchanged);

    // What `bootstrap decommission` runs: the role's records turned into their removal.
    let leave = || {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("test.toml"), role(&knot, "_https._tcp", "SRV", "0 0 443 app1", "")).unwrap();
        let source = DirSource(src.path().to_path_buf());
        let set = states::role::load(&source, &["test".to_string()]).unwrap();
        let mut inputs = pipeline::Inputs::new(dir.path().to_path_buf(), &source, vec!["test".into()], set);
        inputs.secrets = Secrets::new([("dns_tsig".to_string(), KEY_SECRET.to_string())].into());
        inputs.peers = pipeline::Peers::Given(serde_json::json!({}));
        let p = pipeline::decommission(inputs).unwrap();
        apply(&p.cx, &p.nodes)
    };
    assert_eq!(summaries(&leave()), ["deregister _https._tcp.lab.test. SRV 0 0 443 app1.lab.test."]);
    assert_eq!(knot.query("_https._tcp.lab.test", "SRV"), ["0 0 443 app2.lab.test."]);
    assert!(summaries(&leave()).is_empty(), "already gone: nothing to do");
}

#[test]
fn wrong_key_refused_update_and_dead_server_are_clear_errors() {
    let mut knot = Knot::start(ZONE, &[]);
    let dir = tempfile::tempdir().unwrap();
    let role = role(&knot, "app1", "A", "127.0.0.10", "");

    // A key the server does not know.
    let wrong = "q8T0mUQ0m3CHsmp2cC1ItHzMmkzSePWCT7PyBoDGDd8=";
    let cx = cx_with_key(dir.path(), wrong);
    let r = apply(&cx, &nodes(&cx, &role, &[]).unwrap());
    let err = r.states[0].error.clone().unwrap();
    eprintln!("error: {err}");
    assert_eq!(status_of(&r, "rec"), Status::Failed);
    assert!(err.contains(KEY_NAME) && err.contains("TSIG"), "{err}");
    assert!(!err.contains(wrong) && !err.contains(KEY_SECRET), "{err}");
    assert!(knot.query("app1.lab.test", "A").is_empty());

    // A key name the server does not know.
    let cx = cx_with_key(dir.path(), KEY_SECRET);
    let unknown = role.replace(&format!("tsig_key_name = \"{KEY_NAME}\""), "tsig_key_name = \"stranger\"");
    let r = apply(&cx, &nodes(&cx, &unknown, &[]).unwrap());
    let err = r.states[0].error.clone().unwrap();
    eprintln!("error: {err}");
    assert!(err.contains("does not know this TSIG key name") && !err.contains(KEY_SECRET), "{err}");

    // The right key for a zone the server is not authoritative for: refused.
    let cx = cx_with_key(dir.path(), KEY_SECRET);
    let other = role
        .replace("zone = \"lab.test\"", "zone = \"other.test\"")
        .replace("name = \"app1\"", "name = \"app1.other.test\"");
    let r = apply(&cx, &nodes(&cx, &other, &[]).unwrap());
    let err = r.states[0].error.clone().unwrap();
    eprintln!("error: {err}");
    assert!(err.contains("app1.other.test") || err.contains("other.test"), "{err}");
    assert!(!err.contains(KEY_SECRET), "{err}");

    // A stopped server: found in one round trip, then an error naming it; a second record for the same
    // server fails at once instead of waiting again.
    knot.stop();
    let cx = cx_with_key(dir.path(), KEY_SECRET);
    let two = format!("{role}\n{}", role.replace("id = \"rec\"", "id = \"rec2\"").replace("app1", "app2"));
    let t = Instant::now();
    let r = apply(&cx, &nodes(&cx, &two, &[]).unwrap());
    eprintln!("[timing] two records, server down: {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    for s in &r.states {
        let err = s.error.clone().unwrap();
        eprintln!("error: {err}");
        assert!(err.contains(&format!("no answer from the DNS server {}", knot.addr)), "{err}");
    }
    // It says what happened: nothing listens there (not a timeout).
    assert!(r.states[0].error.as_deref().unwrap().contains("connection refused"), "{:?}", r.states[0].error);
}

#[test]
fn bad_parameters_are_refused_when_the_role_compiles() {
    let knot = Knot::start(ZONE, &[]);
    let dir = tempfile::tempdir().unwrap();
    let cx = cx_with_key(dir.path(), KEY_SECRET);
    let cases = [
        (role(&knot, "app1", "A", "not-an-ip", ""), "not an IPv4 address"),
        (role(&knot, "app1", "AAAA", "127.0.0.1", ""), "not an IPv6 address"),
        (role(&knot, "app1", "MX", "10 mail", ""), "`record_type` `MX` is not supported"),
        (role(&knot, "_x._tcp", "SRV", "0 0 app1", ""), "not an SRV value"),
        (role(&knot, "app1.elsewhere.test.", "A", "127.0.0.1", ""), "not inside `zone`"),
        (role(&knot, "app1", "A", "127.0.0.1", "colour = \"red\""), "unknown field `colour`"),
        (
            role(&knot, "app1", "A", "127.0.0.1", "").replace(&knot.addr.to_string(), "nowhere"),
            "not a DNS server address",
        ),
        (role(&knot, "app1", "A", "127.0.0.1", "").replace("\"dns_tsig\"", "\"nope\""), "secret `nope`"),
    ];
    for (text, want) in cases {
        let err = format!("{:#}", nodes(&cx, &text, &[]).err().unwrap_or_else(|| panic!("accepted: {text}")));
        assert!(err.contains(want), "{want}: {err}");
    }
    // A secret that is not base64 is refused without being quoted.
    let cx = cx_with_key(dir.path(), "not base64 at all!");
    let err = format!("{:#}", nodes(&cx, &role(&knot, "app1", "A", "127.0.0.1", ""), &[]).err().unwrap());
    assert!(err.contains("not valid base64") && !err.contains("not base64 at all"), "{err}");
}

#[test]
fn names_relative_absolute_and_inside_the_zone() {
    let knot = Knot::start(ZONE, &[]);
    let dir = tempfile::tempdir().unwrap();
    let cx = cx_with_key(dir.path(), KEY_SECRET);
    for name in ["app1", "app1.lab.test", "app1.lab.test."] {
        let n = nodes(&cx, &role(&knot, name, "A", "127.0.0.10", ""), &[]).unwrap();
        assert_eq!(n[0].state.target(), format!("app1.lab.test. A 127.0.0.10 @{}", knot.addr), "{name}");
    }
}

#[test]
fn a_txt_record_from_a_file_follows_the_file_and_leaves_whole() {
    use std::os::unix::fs::PermissionsExt;
    let knot = Knot::start(ZONE, &[]);
    let dir = tempfile::tempdir().unwrap();
    let cx = cx_with_key(dir.path(), KEY_SECRET);
    let file = dir.path().join("etc/key.pub");
    let text = |absent: bool| {
        format!(
            "[[state]]\nid = \"rec\"\ntype = \"dns_record\"\nserver = \"{}\"\nzone = \"{ZONE}\"\nname = \"_key.app1\"\n\
             record_type = \"TXT\"\nvalue_file = \"/etc/key.pub\"\ntsig_key_name = \"{KEY_NAME}\"\ntsig_secret = \"dns_tsig\"\nabsent = {absent}\n",
            knot.addr
        )
    };
    let nodes = nodes(&cx, &text(false), &[]).unwrap();
    // Before the file is made: pending, nothing sent.
    assert_eq!(
        summaries(&check(&cx, &nodes)),
        ["register _key.app1.lab.test. TXT (the content of /etc/key.pub), once it is made"]
    );
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let long = format!("ssh-ed25519 {} app1", "A".repeat(300));
    std::fs::write(&file, format!("{long}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(apply(&cx, &nodes).changed, 1);
    assert_eq!(knot.query("_key.app1.lab.test.", "TXT").len(), 1);
    assert_eq!(check(&cx, &nodes).pending, 0, "a TXT value over 255 bytes does not compare equal again");
    // A new key replaces the old one.
    std::fs::write(&file, "ssh-ed25519 BBBB app1\n").unwrap();
    assert_eq!(apply(&cx, &nodes).changed, 1);
    let have = knot.query("_key.app1.lab.test.", "TXT");
    assert!(have.len() == 1 && have[0].contains("BBBB"), "{have:?}");
    // A private file is never published.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = check(&cx, &nodes);
    assert!(r.states[0].error.as_deref().unwrap_or("").contains("a private file is never published"), "{r:?}");
    // Leaving removes the whole set, whatever the file holds now (or without it).
    std::fs::remove_file(&file).unwrap();
    knot.update(&["add _key.app1.lab.test. 60 TXT \"stale\""]);
    let gone = nodes_for(&cx, &text(true));
    assert_eq!(apply(&cx, &gone).changed, 1);
    assert!(knot.query("_key.app1.lab.test.", "TXT").is_empty());
    assert_eq!(check(&cx, &gone).pending, 0);
}

fn nodes_for(cx: &Context, role: &str) -> Vec<states::engine::run::Node> {
    nodes(cx, role, &[]).unwrap()
}

#[test]
fn a_record_while_a_file_exists_follows_the_file() {
    let knot = Knot::start(ZONE, &["_mgr._tcp 60 IN SRV 0 0 2377 sw2"]);
    let dir = tempfile::tempdir().unwrap();
    let cx = cx_with_key(dir.path(), KEY_SECRET);
    let marker = dir.path().join("var/lib/marker");
    let nodes = nodes_for(&cx, &role(&knot, "_mgr._tcp", "SRV", "0 0 2377 sw1", "while_exists = \"/var/lib/marker\""));
    // No file: nothing registered (and nothing to remove).
    assert_eq!(apply(&cx, &nodes).changed, 0);
    assert_eq!(knot.query("_mgr._tcp.lab.test", "SRV"), ["0 0 2377 sw2.lab.test."]);
    std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
    std::fs::write(&marker, "manager\n").unwrap();
    assert_eq!(summaries(&apply(&cx, &nodes)), ["register _mgr._tcp.lab.test. SRV 0 0 2377 sw1.lab.test."]);
    assert_eq!(knot.query("_mgr._tcp.lab.test", "SRV").len(), 2);
    assert_eq!(check(&cx, &nodes).pending, 0);
    // The file gone (demoted): only this node's record goes.
    std::fs::remove_file(&marker).unwrap();
    assert_eq!(summaries(&apply(&cx, &nodes)), ["deregister _mgr._tcp.lab.test. SRV 0 0 2377 sw1.lab.test."]);
    assert_eq!(knot.query("_mgr._tcp.lab.test", "SRV"), ["0 0 2377 sw2.lab.test."]);
    assert_eq!(check(&cx, &nodes).pending, 0);
}
