//! Peer discovery: `[discover.NAME]` parsing and bad input, the stable order, the fallback and
//! grace rule on a persisted store with injected timestamps, and real lookups against knotd on
//! 127.0.0.1 (SRV, then A/AAAA of the targets): a new record shows up at once, a dead server
//! keeps the last known list within a bounded wait, a vanished record lingers for the grace
//! period, and a dry run writes nothing.

mod local_knot;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use local_knot::Knot;
use serde_json::json;
use states::pipeline::discovery::{discover, discover_at};
use states::pipeline::peers_store::{self, merge, KnownPeer, Observation, Peer};
use support::*;

fn specs(name: &str, toml_text: &str) -> BTreeMap<String, toml::Table> {
    BTreeMap::from([(name.to_string(), toml::from_str(toml_text).unwrap())])
}

fn peer(host: &str, address: &str, priority: u16, weight: u16) -> Peer {
    Peer { host: host.into(), address: address.into(), port: 5432, priority, weight, txt: Vec::new() }
}

fn known(p: Peer, missing_since: Option<u64>) -> KnownPeer {
    KnownPeer { peer: p, missing_since }
}

fn hosts(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{} {}", p["host"].as_str().unwrap(), p["address"].as_str().unwrap()))
        .collect()
}

#[test]
fn bad_specs_are_refused_naming_the_section() {
    let dir = tempfile::tempdir().unwrap();
    let cx = cx(dir.path());
    for (text, want) in [
        ("srv = \"_pg._tcp.lab.test\"\ncolour = 1", "unknown field `colour`"),
        ("servers = [\"nowhere\"]", "not a DNS server address"),
        ("static = [\"db1.lab.test\"]", "is not `host:port`"),
        ("static = [\"db1:99999\"]", "is not `host:port`"),
        ("srv = \"bad name..x\"", "not a domain name"),
        ("grace_minutes = -1", "grace_minutes"),
        ("srv = 5", "srv"),
    ] {
        let err = format!("{:#}", discover(&cx, &specs("db", text), false).unwrap_err());
        assert!(err.contains("`[discover.db]`") && err.contains(want), "{text}: {err}");
    }
}

#[test]
fn peers_outside_the_networks_given_are_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let cx = cx(dir.path());
    let list = "static = [\"198.18.0.21:5432\", \"203.0.113.9:5432\", \"[2001:db8::20]:5432\"]";
    let s = specs("db", &format!("{list}\nwithin = [\"198.18.0.0/24\", \"2001:db8::/64\", \"\"]"));
    assert_eq!(
        hosts(&discover(&cx, &s, false).unwrap()["db"]),
        ["198.18.0.21 198.18.0.21", "2001:db8::20 2001:db8::20"]
    );
    // An unset setting renders empty: anywhere.
    let s = specs("db", &format!("{list}\nwithin = [\"\"]"));
    assert_eq!(hosts(&discover(&cx, &s, false).unwrap()["db"]).len(), 3);
    let err = discover(&cx, &specs("db", "within = [\"198.18.0.0/33\"]"), false).unwrap_err();
    assert!(format!("{err:#}").contains("`[discover.db]`: `within`: `198.18.0.0/33` is not a network"), "{err:#}");
}

#[test]
fn static_peers_need_no_dns_and_empty_specs_yield_empty_lists() {
    let dir = tempfile::tempdir().unwrap();
    let cx = cx(dir.path());
    let mut s = specs("db", "static = [\"198.18.0.21:5432\", \"[2001:db8::20]:5433\", \"198.18.0.20:5432\"]");
    // An SRV name from an unset setting renders empty: no lookup, no error.
    s.extend(specs("cache", "srv = \"\""));
    let peers = discover(&cx, &s, true).unwrap();
    assert_eq!(peers["cache"], json!([]));
    assert_eq!(
        peers["db"],
        json!([
            { "host": "198.18.0.20", "name": "198.18.0.20", "address": "198.18.0.20", "port": 5432, "priority": 0, "weight": 0, "txt": [] },
            { "host": "198.18.0.21", "name": "198.18.0.21", "address": "198.18.0.21", "port": 5432, "priority": 0, "weight": 0, "txt": [] },
            { "host": "2001:db8::20", "name": "2001:db8::20", "address": "2001:db8::20", "port": 5433, "priority": 0, "weight": 0, "txt": [] },
        ])
    );
    assert_eq!(discover(&cx, &BTreeMap::new(), true).unwrap(), json!({}));
}

#[test]
fn peers_sort_by_priority_then_heavier_then_name() {
    let mut v = vec![
        peer("c.", "10.0.0.3", 10, 5),
        peer("b.", "10.0.0.2", 0, 10),
        peer("a.", "10.0.0.1", 0, 10),
        peer("z.", "10.0.0.9", 0, 50),
    ];
    peers_store::sort(&mut v);
    let order: Vec<&str> = v.iter().map(|p| p.host.as_str()).collect();
    assert_eq!(order, ["z.", "a.", "b.", "c."]);
}

#[test]
fn merge_keeps_the_known_list_on_failure_and_drops_only_after_the_grace_period() {
    let (db1, db2) = (peer("db1.", "10.0.0.1", 0, 0), peer("db2.", "10.0.0.2", 0, 0));
    let list = vec![known(db1.clone(), None), known(db2.clone(), None)];
    let grace = 3600;

    // A failed lookup keeps everything as it was, missing timestamps included.
    let failed = Observation { failed: Some("timed out".into()), ..Default::default() };
    assert_eq!(merge(&list, &failed, 1000, grace), list);

    // db2 missing from a successful lookup: kept, with when it was first missed.
    let only_db1 = Observation { peers: vec![db1.clone()], ..Default::default() };
    let after = merge(&list, &only_db1, 1000, grace);
    assert_eq!(after, vec![known(db1.clone(), None), known(db2.clone(), Some(1000))]);
    // Still missing later, within the grace period: the first timestamp stays.
    assert_eq!(merge(&after, &only_db1, 1000 + grace - 1, grace), after);
    // An outage in between changes nothing.
    assert_eq!(merge(&after, &failed, 1000 + grace, grace), after);
    // Missing for the whole grace period: dropped.
    assert_eq!(merge(&after, &only_db1, 1000 + grace, grace), vec![known(db1.clone(), None)]);
    // Back before that: the timestamp is cleared.
    assert_eq!(
        merge(&after, &Observation { peers: vec![db2.clone(), db1.clone()], ..Default::default() }, 2000, grace),
        list
    );

    // A host whose addresses could not be looked up is not "missing": nothing was learnt.
    let unresolved = Observation {
        peers: vec![db1.clone()],
        unresolved: BTreeSet::from(["db2.".to_string()]),
        ..Default::default()
    };
    assert_eq!(merge(&list, &unresolved, 1000, grace), list);
    // Priority and weight follow the latest answer.
    let reweighted = peer("db1.", "10.0.0.1", 0, 9);
    let r = merge(&list, &Observation { peers: vec![reweighted.clone(), db2.clone()], ..Default::default() }, 5, grace);
    assert_eq!(r, vec![known(reweighted, None), known(db2, None)]);
}

#[test]
fn lookups_against_a_real_server_with_fallback_and_grace() {
    let mut knot = Knot::start(
        "lab.test",
        &[
            "_postgresql._tcp 60 IN SRV 0 0 5432 db1",
            "db1 60 IN A 127.0.0.21",
            "db1 60 IN AAAA fd00::21",
            "db2 60 IN A 127.0.0.22",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let cx = cx(dir.path());
    let s =
        specs("db", &format!("srv = \"_postgresql._tcp.lab.test\"\nservers = [\"{}\"]\ngrace_minutes = 10", knot.addr));
    let store = peers_store::path(&cx);
    let now = 1_700_000_000;

    // A dry run looks up but writes nothing.
    let t = Instant::now();
    let peers = discover_at(&cx, &s, false, now).unwrap();
    let lookup = t.elapsed();
    eprintln!("[timing] discovery (1 SRV + A/AAAA of 1 target) against knotd on loopback: {lookup:?}");
    assert_eq!(hosts(&peers["db"]), ["db1.lab.test. 127.0.0.21", "db1.lab.test. fd00::21"]);
    assert_eq!(peers["db"][0]["port"], 5432);
    assert!(!store.exists());

    // A real run remembers the list, root-only.
    discover_at(&cx, &s, true, now).unwrap();
    assert_eq!(std::fs::metadata(&store).unwrap().permissions().mode() & 0o777, 0o600);
    let mtime = std::fs::metadata(&store).unwrap().modified().unwrap();
    // Unchanged answers leave the file alone.
    discover_at(&cx, &s, true, now + 60).unwrap();
    assert_eq!(std::fs::metadata(&store).unwrap().modified().unwrap(), mtime);

    // A second SRV record shows up at the next lookup, ordered by weight.
    knot.update(&["add _postgresql._tcp.lab.test. 60 SRV 0 10 5432 db2.lab.test."]);
    let peers = discover_at(&cx, &s, true, now + 120).unwrap();
    assert_eq!(hosts(&peers["db"]), ["db2.lab.test. 127.0.0.22", "db1.lab.test. 127.0.0.21", "db1.lab.test. fd00::21"]);

    // The server down: the last known list stands, within a bounded wait.
    knot.stop();
    let t = Instant::now();
    let during = discover_at(&cx, &s, true, now + 180).unwrap();
    eprintln!("[timing] discovery with the DNS server down: {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(6), "a dead server stalled discovery for {:?}", t.elapsed());
    assert_eq!(during, peers);

    // An empty answer is an answer: the server says the name has no records (the last db
    // node was decommissioned). The peers stay through the grace period (10 min), then go.
    knot.restart();
    knot.update(&["delete _postgresql._tcp.lab.test. SRV"]);
    assert_eq!(discover_at(&cx, &s, true, now + 240).unwrap(), peers);
    assert_eq!(discover_at(&cx, &s, true, now + 240 + 599).unwrap(), peers);
    // A failure meanwhile (the server stopped) changes nothing: no answer, nothing learnt.
    knot.stop();
    assert_eq!(discover_at(&cx, &s, true, now + 240 + 600).unwrap(), peers, "a DNS failure dropped peers");
    knot.restart();
    let empty = discover_at(&cx, &s, true, now + 240 + 600).unwrap();
    assert_eq!(empty["db"], json!([]), "an empty answer kept the peers past the grace period");

    // They come back at once; then db1 leaves the SRV set: listed through the grace period, then dropped.
    knot.update(&[
        "add _postgresql._tcp.lab.test. 60 SRV 0 10 5432 db2.lab.test.",
        "add _postgresql._tcp.lab.test. 60 SRV 0 0 5432 db1.lab.test.",
    ]);
    assert_eq!(discover_at(&cx, &s, true, now + 1000).unwrap(), peers);
    knot.update(&["delete _postgresql._tcp.lab.test. SRV 0 0 5432 db1.lab.test."]);
    assert_eq!(discover_at(&cx, &s, true, now + 1100).unwrap(), peers);
    assert_eq!(discover_at(&cx, &s, true, now + 1100 + 599).unwrap(), peers);
    let after = discover_at(&cx, &s, true, now + 1100 + 600).unwrap();
    assert_eq!(hosts(&after["db"]), ["db2.lab.test. 127.0.0.22"]);

    // A dry run at a time when more would drop leaves the store as it was.
    let before = std::fs::read(&store).unwrap();
    knot.update(&[
        "delete _postgresql._tcp.lab.test. SRV",
        "add _postgresql._tcp.lab.test. 60 SRV 0 0 5432 db1.lab.test.",
    ]);
    discover_at(&cx, &s, false, now + 100_000).unwrap();
    assert_eq!(std::fs::read(&store).unwrap(), before);

    // Another SRV name does not inherit the remembered list.
    let other = specs("db", &format!("srv = \"_other._tcp.lab.test\"\nservers = [\"{}\"]", knot.addr));
    assert_eq!(discover_at(&cx, &other, false, now).unwrap()["db"], json!([]));
}

#[test]
fn static_host_names_are_resolved_and_merged_with_srv() {
    let knot = Knot::start(
        "lab.test",
        &["_postgresql._tcp 60 IN SRV 5 0 5432 db1", "db1 60 IN A 127.0.0.21", "fixed 60 IN A 127.0.0.30"],
    );
    let dir = tempfile::tempdir().unwrap();
    let cx = cx(dir.path());
    let s = specs(
        "db",
        &format!("srv = \"_postgresql._tcp.lab.test\"\nservers = [\"{}\"]\nstatic = [\"fixed.lab.test:6432\", \"127.0.0.40:5432\"]", knot.addr),
    );
    let peers = discover_at(&cx, &s, false, 0).unwrap();
    assert_eq!(
        hosts(&peers["db"]),
        ["127.0.0.40 127.0.0.40", "fixed.lab.test. 127.0.0.30", "db1.lab.test. 127.0.0.21"]
    );
    assert_eq!(peers["db"][1]["port"], 6432);
}

#[test]
fn published_txt_comes_with_each_peer_and_a_failed_lookup_keeps_it() {
    let mut knot = Knot::start(
        "lab.test",
        &[
            "_sshfs._tcp 60 IN SRV 0 0 22 app1",
            "_sshfs._tcp 60 IN SRV 0 0 22 app2",
            "app1 60 IN A 127.0.0.31",
            "app2 60 IN A 127.0.0.32",
            "_sshfs-client-key.app1 60 IN TXT \"ssh-ed25519 AAAAkey1 app1\"",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let cx = cx(dir.path());
    let s = specs(
        "clients",
        &format!("srv = \"_sshfs._tcp.lab.test\"\nservers = [\"{}\"]\ntxt = \"_sshfs-client-key\"", knot.addr),
    );
    let now = 1_700_000_000;
    let peers = discover_at(&cx, &s, true, now).unwrap();
    assert_eq!(peers["clients"][0]["txt"], json!(["ssh-ed25519 AAAAkey1 app1"]), "{peers}");
    assert_eq!(peers["clients"][1]["txt"], json!([]), "a host without the record: no key");
    // A key published later is seen at the next run; the server down keeps what was known.
    knot.update(&["add _sshfs-client-key.app2.lab.test. 60 TXT \"ssh-ed25519 AAAAkey2 app2\""]);
    let peers = discover_at(&cx, &s, true, now + 60).unwrap();
    assert_eq!(peers["clients"][1]["txt"], json!(["ssh-ed25519 AAAAkey2 app2"]), "{peers}");
    knot.stop();
    assert_eq!(discover_at(&cx, &s, true, now + 120).unwrap(), peers);
    // A key withdrawn (a decommissioned client) is gone at once, whatever the grace period.
    knot.restart();
    knot.update(&["delete _sshfs-client-key.app2.lab.test. TXT"]);
    let after = discover_at(&cx, &s, true, now + 180).unwrap();
    assert_eq!(after["clients"][1]["txt"], json!([]), "{after}");
    // `txt` is one label.
    let bad = specs("clients", "txt = \"a.b\"");
    let err = discover_at(&cx, &bad, false, now).unwrap_err().to_string();
    assert!(err.contains("must be one label"), "{err}");
}
