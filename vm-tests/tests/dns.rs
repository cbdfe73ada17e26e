//! Self-registration (`dns_record`, RFC 2136 + TSIG) and peer discovery (`[discover.NAME]`,
//! SRV) on a fresh node against knot on 198.18.0.1. Proves: the node registers its A and SRV
//! records and knot serves them; a file rendered from `peers.db` lists the db from SRV, and a
//! second db as soon as it is in DNS; with knot down the list keeps its members while the
//! dns_record states fail clearly and the other states still run; a record deleted in knot is
//! named by `--check` and re-registered; `absent = true` removes exactly the node's records;
//! every scenario ends converged; the TSIG key appears in no output, file or journal.

use std::time::Instant;

use vm_tests::operator::{run_test_role, INSTALLED as BIN, TEST_ROLES as ROLES};
use vm_tests::report::{self, state, summaries, RunReport, Status};
use vm_tests::{bootstrap_bin, timed, Knot, Lab, Node, RunOpts, RunResult, Zone};

const SECRETS: &str = "/root/bt-secrets.toml";
const POOL: &str = "/etc/bt-peers/db.conf";

fn role(absent: bool) -> String {
    format!(
        r#"description = "issues 5 and 6 lab role: register in DNS, render the discovered db peers"

[[secret]]
name = "dns_tsig"
prompt = "TSIG key for updates of lab.test"

[discover.db]
srv = "_postgresql._tcp.lab.test"
servers = ["198.18.0.1:53"]

[[state]]
id = "dns-a"
type = "dns_record"
server = "198.18.0.1:53"
zone = "lab.test"
name = "{{{{facts.hostname}}}}"
record_type = "A"
value = "{{{{facts.addresses.[0]}}}}"
tsig_key_name = "lab-update"
tsig_secret = "dns_tsig"
absent = {absent}

[[state]]
id = "dns-srv"
type = "dns_record"
server = "198.18.0.1"
zone = "lab.test"
name = "_https._tcp"
record_type = "SRV"
value = "0 0 443 {{{{facts.hostname}}}}"
tsig_key_name = "lab-update"
tsig_secret = "dns_tsig"
absent = {absent}

[[state]]
id = "db-pool"
type = "file"
path = "{POOL}"
template = "db-pool.hbs"
"#
    )
}

const TEMPLATE: &str = "# managed by bootstrap (lab test)
{{#each peers.db}}server {{host}} {{address}}:{{port}} priority {{priority}} weight {{weight}}
{{/each}}";

/// Every output of the node's runs, searched for the key at the end.
struct Outputs(Vec<String>);

impl Outputs {
    fn bt(&mut self, node: &Node, args: &[&str]) -> RunResult {
        let mut argv = vec!["--secrets-file", SECRETS];
        argv.extend_from_slice(args);
        let r = run_test_role(node, &argv);
        self.0.push(format!("{}\n{}", r.stdout, r.stderr));
        r
    }

    fn apply(&mut self, node: &Node) -> RunReport {
        report::applied(&self.bt(node, &["apply", "--json"]))
    }

    fn check(&mut self, node: &Node) -> RunResult {
        self.bt(node, &["--check", "--json"])
    }

    fn converged(&mut self, node: &Node) {
        assert_eq!(self.apply(node).changed, 0, "a second run changes nothing");
        let r = self.check(node);
        assert_eq!(r.code, 0, "--check after converging:\n{}\n{}", r.stdout, r.stderr);
    }
}

fn put_key(node: &Node, knot: &Knot) {
    node.put_file(SECRETS, format!("dns_tsig = \"{}\"\n", knot.tsig_key().secret).as_bytes(), 0o600);
}

fn zone() -> Zone {
    Zone::new("lab.test").record("_postgresql._tcp 60 IN SRV 0 0 5432 db1").record("db1 60 IN A 198.18.0.20")
}

#[test]
fn dns_self_registration_and_peer_discovery() {
    let total = Instant::now();
    let lab = timed("lab ready", || Lab::new("dns"));
    let mut knot = lab.start_knot(&[zone()]);
    let node = timed("boot", || lab.boot("app1"));
    let addr = node.addr().to_string();
    let mut keys = vec![knot.tsig_key().secret.clone()];
    node.put_file(BIN, &std::fs::read(bootstrap_bin()).unwrap(), 0o755);
    node.put_file(&format!("{ROLES}/test.toml"), role(false).as_bytes(), 0o644);
    node.put_file(&format!("{ROLES}/templates/db-pool.hbs"), TEMPLATE.as_bytes(), 0o644);
    put_key(&node, &knot);
    let mut out = Outputs(Vec::new());

    // A dry run names every change, and neither DNS nor the node changes.
    let r = out.check(&node);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let plan = report::parse(&r);
    assert_eq!(plan.ids_with(Status::Pending), ["dns-a", "dns-srv", "db-pool"]);
    assert_eq!(summaries(&plan, "dns-a"), [format!("register app1.lab.test. A {addr}")]);
    assert_eq!(summaries(&plan, "dns-srv"), ["register _https._tcp.lab.test. SRV 0 0 443 app1.lab.test."]);
    assert!(knot.query("app1.lab.test", "A").is_empty());
    assert!(!node.exists("/var/lib/bootstrap/peers.json"), "a dry run writes no peer store");

    // Converge: knot serves the records, the file lists db1 from SRV.
    let r = timed("first apply", || out.apply(&node));
    assert_eq!(r.ids_with(Status::Changed), ["dns-a", "dns-srv", "db-pool"]);
    assert_eq!(knot.query("app1.lab.test", "A"), [addr.as_str()]);
    assert_eq!(knot.query("_https._tcp.lab.test", "SRV"), ["0 0 443 app1.lab.test."]);
    let dig = knot.kdig(&["_https._tcp.lab.test", "SRV"]).assert_ok("kdig").stdout;
    assert!(dig.contains("status: NOERROR") && dig.contains("app1.lab.test."), "{dig}");
    let pool = node.read_file(POOL);
    assert_eq!(pool, "# managed by bootstrap (lab test)\nserver db1.lab.test. 198.18.0.20:5432 priority 0 weight 0\n");
    let store_mode = node.exec(&["stat", "-c", "%a", "/var/lib/bootstrap/peers.json"]).stdout;
    assert_eq!(store_mode.trim(), "600");
    out.converged(&node);
    // The no-op cost as the schedule sees it (the whole process, inside the node): 5 runs.
    let noop = node.exec(&[
        "sh",
        "-c",
        &format!(
            "for i in 1 2 3 4 5; do s=$(date +%s%N); {BIN} --roles {ROLES} --secrets-file {SECRETS} apply test \
             >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000 )); done"
        ),
    ]);
    let mut us: Vec<u64> =
        noop.stdout.lines().map(|l| l.trim().parse().unwrap_or_else(|_| panic!("{noop:?}"))).collect();
    us.sort();
    eprintln!(
        "[timing] no-op apply (discovery: 1 SRV + A/AAAA of 1 target; 2 dns_record queries; 1 file): \
         min {:.1} ms, median {:.1} ms wall",
        us[0] as f64 / 1000.0,
        us[2] as f64 / 1000.0
    );

    // A second db in DNS is in the file after the next run, heavier first.
    knot.update(
        "lab.test",
        &["add _postgresql._tcp.lab.test. 60 SRV 0 10 5432 db2.lab.test.", "add db2.lab.test. 60 A 198.18.0.21"],
    );
    let r = out.apply(&node);
    assert_eq!(r.ids_with(Status::Changed), ["db-pool"]);
    let two = "# managed by bootstrap (lab test)
server db2.lab.test. 198.18.0.21:5432 priority 0 weight 10
server db1.lab.test. 198.18.0.20:5432 priority 0 weight 0
";
    assert_eq!(node.read_file(POOL), two);
    out.converged(&node);

    // knot down: discovery keeps both members, dns_record fails clearly, the file state runs.
    knot.stop();
    let t = Instant::now();
    let r = out.bt(&node, &["apply", "--json"]);
    eprintln!("[timing] apply with the DNS server down: {:.1}s", t.elapsed().as_secs_f64());
    assert_eq!(r.code, 1, "a failed state fails the run:\n{}\n{}", r.stdout, r.stderr);
    let rep = report::parse(&r);
    assert_eq!(rep.ids_with(Status::Failed), ["dns-a", "dns-srv"]);
    assert_eq!(rep.ids_with(Status::Unchanged), ["db-pool", "bootstrap-files"], "{:?}", state(&rep, "bootstrap-files"));
    let err = state(&rep, "dns-a").error.clone().unwrap();
    assert!(err.contains("no answer from the DNS server 198.18.0.1:53"), "{err}");
    assert_eq!(node.read_file(POOL), two, "the pool keeps its members while DNS is down");
    let journal = node.journal(&["-t", "bootstrap"]);
    assert!(journal.contains("discovery of `db` failed ("), "{journal}");
    assert!(journal.contains("keeping the last known 2 peers"), "{journal}");

    // knot back from its zone file, with a new key (rotated): the node registers again.
    let _ = std::fs::remove_dir_all(lab.dir().join("knot/db"));
    knot = lab.start_knot(&[zone()
        .record("_postgresql._tcp 60 IN SRV 0 10 5432 db2")
        .record("db2 60 IN A 198.18.0.21")
        .record("_https._tcp 60 IN SRV 0 0 443 app2")]);
    keys.push(knot.tsig_key().secret.clone());
    put_key(&node, &knot);
    let r = out.check(&node);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(report::parse(&r).ids_with(Status::Pending), ["dns-a", "dns-srv"]);
    out.apply(&node);
    assert_eq!(knot.query("app1.lab.test", "A"), [addr.as_str()]);
    assert_eq!(knot.query("_https._tcp.lab.test", "SRV"), ["0 0 443 app1.lab.test.", "0 0 443 app2.lab.test."]);
    out.converged(&node);

    // The node's A record deleted in knot: --check names it, apply puts it back.
    knot.update("lab.test", &["delete app1.lab.test. A"]);
    let r = out.check(&node);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let plan = report::parse(&r);
    assert_eq!(plan.ids_with(Status::Pending), ["dns-a"]);
    assert_eq!(summaries(&plan, "dns-a"), [format!("register app1.lab.test. A {addr}")]);
    let human = out.bt(&node, &["--check"]);
    assert!(human.stdout.contains("dns-a"), "{}", human.stdout);
    assert_eq!(out.apply(&node).ids_with(Status::Changed), ["dns-a"]);
    assert_eq!(knot.query("app1.lab.test", "A"), [addr.as_str()]);
    out.converged(&node);

    // Debug logging (every command line, hickory's own messages) still never shows the key.
    let r = node.run_opts(
        &[BIN, "--roles", ROLES, "--secrets-file", SECRETS, "apply", "test"],
        &RunOpts::default().env("BOOTSTRAP_LOG", "debug"),
    );
    out.0.push(format!("{}\n{}", r.stdout, r.stderr));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    // absent = true removes exactly this node's records.
    node.put_file(&format!("{ROLES}/test.toml"), role(true).as_bytes(), 0o644);
    let r = out.apply(&node);
    assert_eq!(summaries(&r, "dns-a"), [format!("deregister app1.lab.test. A {addr}")]);
    assert_eq!(summaries(&r, "dns-srv"), ["deregister _https._tcp.lab.test. SRV 0 0 443 app1.lab.test."]);
    assert!(knot.query("app1.lab.test", "A").is_empty());
    assert_eq!(knot.query("_https._tcp.lab.test", "SRV"), ["0 0 443 app2.lab.test."]);
    out.converged(&node);

    // The key: in no output, no journal entry, no file bootstrap wrote.
    let journal = node.journal(&[]);
    let written = node.exec(&["sh", "-c", "cat /var/lib/bootstrap/*.json /etc/bt-peers/*"]).stdout;
    for key in &keys {
        for o in &out.0 {
            assert!(!o.contains(key.as_str()), "the TSIG key leaked into output:\n{o}");
        }
        assert!(!journal.contains(key.as_str()), "the TSIG key is in the journal");
        assert!(!written.contains(key.as_str()), "the TSIG key is in a file bootstrap wrote");
    }

    drop(node);
    drop(knot);
    drop(lab);
    eprintln!("[timing] dns total: {:.1}s", total.elapsed().as_secs_f64());
}
