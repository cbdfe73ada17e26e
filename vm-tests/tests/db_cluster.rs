//! The high-availability database on fresh nodes with knot for DNS: a single db node of the
//! previous kind (Debian's own cluster) holding 1,000 rows is converted in place by setting
//! `db_ha = true`, then two more db nodes join with nothing but `./bootstrap db` and the same
//! secrets: one etcd cluster, one Patroni cluster (a leader, two replicas streaming, one of
//! them synchronous). The app node's pools follow the leader (`:5432` writes, `:5433` reads).
//! Failover: a writer loops inserts through the app node's pool while the leader's container
//! is killed (SIGKILL of its PID 1): printed are the seconds until writes resumed, and every
//! insert the writer saw acknowledged is counted on the new leader. The killed node boots
//! again and rejoins as a replica with no manual step. Every node converged at the end (a run
//! changes nothing, `--check` exits 0), and no canary secret appears in any output.

use std::time::{Duration, Instant};

use vm_tests::db_cluster::{leader, lost, members, now, psql_local, start_writer, wait_cluster, writes_resumed};
use vm_tests::operator::{download, serve_binary, INSTALLED};
use vm_tests::report::applied;
use vm_tests::{timed, Lab, Node, RunOpts, RunResult, Zone};

const DB_PASSWORD: &str = "canary-db-Pw-0001";
const CLUSTER_SECRET: &str = "canary-cluster-secret-0001";

/// psql on the app node through its pool on `port`.
fn app_sql(app: &Node, port: u16, sql: &str) -> RunResult {
    app.run(&[
        "sh",
        "-c",
        &format!("set -a; . /etc/bootstrap/app/database.env; PGPORT={port} psql -X -A -t -c \"{sql}\""),
    ])
}

fn install(node: &Node, opts: &RunOpts) {
    let what = format!("./bootstrap db on {}", node.name());
    let r = timed(&what, || node.run_opts(&["/root/bootstrap", "--site", "/root/site.toml", "db"], opts));
    assert_eq!(r.code, 0, "{what}:\n{}\n{}\n{}", r.stdout, r.stderr, node.journal(&["-u", "patroni", "-n", "60"]));
    assert_no_canary(&r);
}

fn assert_no_canary(r: &RunResult) {
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(!all.contains("canary-"), "a secret leaked:\n{all}");
}

/// `argv` on `node`, again while the node's own scheduled run holds the lock (its cron fires
/// every 15 minutes, splayed, and may overlap a scenario's run).
fn run_unlocked(node: &Node, argv: &[&str]) -> RunResult {
    let t = Instant::now();
    loop {
        let r = node.run(argv);
        if !r.stderr.contains("holds /run/bootstrap.lock") || t.elapsed() > Duration::from_secs(300) {
            return r;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// A run (which may still pick up what others changed: a replaced peer's address), then a
/// second that changes nothing, and `--check` clean.
fn converged(node: &Node) {
    let r = run_unlocked(node, vm_tests::report::APPLY);
    assert_no_canary(&r);
    applied(&r);
    let r = run_unlocked(node, vm_tests::report::APPLY);
    assert_no_canary(&r);
    let report = applied(&r);
    assert_eq!(report.changed, 0, "{} changed on a second run: {report:?}", node.name());
    let r = run_unlocked(node, vm_tests::report::CHECK);
    let (code, report) = vm_tests::report::checked(&r);
    let pending = report.ids_with(vm_tests::report::Status::Pending);
    assert_eq!((code, pending), (0, Vec::new()), "{} --check", node.name());
}

#[test]
fn a_single_db_node_becomes_a_cluster_of_three_that_survives_its_leader() {
    let lab = Lab::new("db_cluster");
    let knot = lab.start_knot(&[Zone::new("lab.test")]);
    let key = knot.tsig_key().clone();
    let http = lab.http_server(0);
    serve_binary(&http);
    let mut dbs: Vec<Node> = ["db1", "db2", "db3"].iter().map(|n| lab.boot(n)).collect();
    let app = lab.boot("app1");
    let site = |ha: bool| {
        format!(
            "dns_zone = \"lab.test\"\ndns_server = \"198.18.0.1:53\"\ntsig_key_name = \"{}\"\nprivate_cidr = \"198.18.0.0/24\"\ndb_ha = {ha}\n",
            key.name
        )
    };
    for node in dbs.iter().chain([&app]) {
        download(node, &http);
        node.put_file("/root/site.toml", site(true).as_bytes(), 0o644);
    }
    let secrets = RunOpts::default()
        .env("BOOTSTRAP_SECRET_DNS_TSIG_KEY", &key.secret)
        .env("BOOTSTRAP_SECRET_DB_PASSWORD", DB_PASSWORD)
        .env("BOOTSTRAP_SECRET_DB_CLUSTER_SECRET", CLUSTER_SECRET)
        .timeout(Duration::from_secs(900));

    // db1 as it is today: Debian's cluster, 1,000 rows.
    dbs[0].put_file("/root/site.toml", site(false).as_bytes(), 0o644);
    install(&dbs[0], &secrets);
    psql_local(&dbs[0], "create table rows (n int primary key); insert into rows select generate_series(1, 1000)")
        .assert_ok("rows");

    // Converted in place: the same node, db_ha on.
    dbs[0].put_file("/root/site.toml", site(true).as_bytes(), 0o644);
    let r = timed("convert db1", || dbs[0].run_opts(&["/root/bootstrap", "--site", "/root/site.toml", "db"], &secrets));
    assert_eq!(
        r.code,
        0,
        "conversion:\n{}\n{}\n{}",
        r.stdout,
        r.stderr,
        dbs[0].journal(&["-u", "patroni", "-n", "60"])
    );
    assert_eq!(psql_local(&dbs[0], "select count(*) from rows").assert_ok("count").stdout.trim(), "1000");
    assert_eq!(wait_cluster(&dbs[0], 1, Duration::from_secs(60)).len(), 1);

    // Two more join.
    install(&dbs[1], &secrets);
    install(&dbs[2], &secrets);
    let m = wait_cluster(&dbs[0], 3, Duration::from_secs(120));
    eprintln!("[db_cluster] patronictl list: {m:?}");
    assert_eq!(leader(&dbs[0]).as_deref(), Some("db1"));
    let etcd = dbs[2].run(&["etcdctl", "--endpoints=http://127.0.0.1:2379", "member", "list"]).assert_ok("etcdctl");
    assert_eq!(etcd.stdout.lines().filter(|l| l.contains("started")).count(), 3, "{}", etcd.stdout);
    let streaming = "select count(*), count(*) filter (where sync_state = 'sync') from pg_stat_replication where state = 'streaming'";
    let repl = vm_tests::cmd::poll(Duration::from_secs(60), || {
        Some(psql_local(&dbs[0], streaming).stdout.trim().to_string()).filter(|s| s == "2|1")
    });
    assert_eq!(repl.as_deref(), Some("2|1"), "two replicas streaming, one synchronous");
    for db in &dbs[1..] {
        assert_eq!(psql_local(db, "select count(*) from rows").assert_ok("replica count").stdout.trim(), "1000");
    }

    // The app node follows the leader.
    app.sh("apt-get update -qq && apt-get install -y -qq postgresql-client >/dev/null").assert_ok("psql client");
    let r =
        timed("./bootstrap app", || app.run_opts(&["/root/bootstrap", "--site", "/root/site.toml", "app"], &secrets));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let cfg = app.read_file("/etc/haproxy/haproxy.cfg");
    assert!(cfg.contains("option httpchk GET /primary") && cfg.contains("check port 8008"), "{cfg}");
    // haproxy starts with every server up until its checks say otherwise (fall 2, inter 1 s).
    std::thread::sleep(Duration::from_secs(5));
    for _ in 0..4 {
        let r = app_sql(&app, 5433, "select pg_is_in_recovery()").assert_ok("read through :5433");
        assert_eq!(r.stdout.trim(), "t", "5433 reaches replicas only");
        let r = app_sql(&app, 5432, "select pg_is_in_recovery()").assert_ok("through :5432");
        assert_eq!(r.stdout.trim(), "f", "5432 reaches the leader only");
    }
    app_sql(&app, 5432, "create table acks (n int primary key)").assert_ok("write through :5432");
    let status = dbs[2].run(&[INSTALLED, "status"]);
    assert!(
        status.stdout.contains("cluster:  3 member(s)") && status.stdout.contains("db1 (198.18.0.10): leader"),
        "{}",
        status.stdout
    );
    let r = app_sql(&app, 5433, "insert into acks values (0)");
    assert_ne!(r.code, 0, "a replica took a write");

    // Failover under a writer.
    start_writer(&app);
    std::thread::sleep(Duration::from_secs(5));
    assert!(vm_tests::db_cluster::acked(&app).len() > 10, "the writer does not write");
    let killed_at = now();
    dbs[0].kill();
    let (resumed, seen) = writes_resumed(&app, killed_at, Duration::from_secs(120));
    let new_leader =
        vm_tests::cmd::poll(Duration::from_secs(60), || leader(&dbs[1]).filter(|l| l != "db1")).expect("a new leader");
    let on = dbs.iter().find(|d| d.name() == new_leader).unwrap();
    let lost = lost(on, &seen);
    println!(
        "[db_cluster] leader killed: writes resumed after {resumed:.1} s on {new_leader}; {} acknowledged inserts, {} lost",
        seen.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged inserts lost: {lost:?}");

    // The killed node boots again and rejoins as a replica by itself.
    let t = Instant::now();
    dbs[0].start();
    let m = wait_cluster(&dbs[1], 3, Duration::from_secs(180));
    println!("[db_cluster] db1 rejoined as a replica {:.1} s after its boot: {m:?}", t.elapsed().as_secs_f64());
    assert!(m.iter().any(|(n, r, _)| n == "db1" && r != "Leader"), "{m:?}");
    assert_eq!(psql_local(&dbs[0], "select count(*) from rows").assert_ok("db1 rows").stdout.trim(), "1000");

    for node in dbs.iter().chain([&app]) {
        converged(node);
    }

    // The no-op run on a member, median of 20 with hyperfine (printed for BENCHMARKS.md).
    dbs[1].sh("apt-get install -y -qq hyperfine >/dev/null").assert_ok("hyperfine");
    dbs[1]
        .run(&[
            "hyperfine",
            "-N",
            "-i",
            "--warmup",
            "3",
            "--runs",
            "20",
            "--export-json",
            "/tmp/noop.json",
            "/usr/local/sbin/bootstrap apply",
        ])
        .assert_ok("hyperfine");
    let h: serde_json::Value = serde_json::from_str(&dbs[1].read_file("/tmp/noop.json")).unwrap();
    let mut slow = applied(&run_unlocked(&dbs[1], vm_tests::report::APPLY)).states;
    slow.sort_by(|a, b| b.duration_ms.partial_cmp(&a.duration_ms).unwrap());
    let slow: Vec<String> = slow.iter().take(6).map(|s| format!("{} {:.1} ms", s.id, s.duration_ms)).collect();
    println!("[db_cluster] slowest states of a no-op run: {}", slow.join(", "));
    println!(
        "[db_cluster] no-op apply on a replica: median {:.1} ms (hyperfine, 20 runs)",
        h["results"][0]["median"].as_f64().unwrap() * 1000.0
    );

    // db3 dies for good and a fresh node of the same name (another address) replaces it: its
    // etcd member is replaced, its replica cloned anew.
    dbs[2].kill();
    drop(dbs.pop());
    let db3 = lab.boot("db3");
    download(&db3, &http);
    db3.put_file("/root/site.toml", site(true).as_bytes(), 0o644);
    install(&db3, &secrets);
    dbs.push(db3);
    let m = wait_cluster(&dbs[1], 3, Duration::from_secs(120));
    println!("[db_cluster] db3 replaced by a fresh node: {m:?}");
    let etcd = dbs[1].run(&["etcdctl", "--endpoints=http://127.0.0.1:2379", "member", "list"]).assert_ok("etcdctl");
    assert_eq!(etcd.stdout.lines().count(), 3, "{}", etcd.stdout);
    assert!(etcd.stdout.contains(&format!("db3, http://{}:2380", dbs[2].addr())), "{}", etcd.stdout);
    assert_eq!(psql_local(&dbs[2], "select count(*) from rows").assert_ok("db3 rows").stdout.trim(), "1000");

    // The leader is decommissioned: it hands its leadership over and leaves etcd; two healthy
    // members remain and the app still writes.
    let leading = leader(&dbs[1]).expect("a leader");
    let idx = dbs.iter().position(|d| d.name() == leading).unwrap();
    let r = run_unlocked(&dbs[idx], &[INSTALLED, "decommission"]);
    assert_no_canary(&r);
    assert_eq!(r.code, 0, "decommission:\n{}\n{}", r.stdout, r.stderr);
    let gone = dbs.remove(idx);
    let survivor = &dbs[0];
    wait_cluster(survivor, 2, Duration::from_secs(60));
    // Its member key goes with its lease (ttl 12 s).
    let m = vm_tests::cmd::poll(Duration::from_secs(60), || {
        Some(members(survivor)).filter(|m| m.len() == 2 && !m.iter().any(|(n, _, _)| n == gone.name()))
    });
    let m = m.unwrap_or_else(|| panic!("{} is still listed: {:?}", gone.name(), members(survivor)));
    let etcd = survivor.run(&["etcdctl", "--endpoints=http://127.0.0.1:2379", "member", "list"]).assert_ok("etcdctl");
    assert_eq!(etcd.stdout.lines().count(), 2, "{}", etcd.stdout);
    println!("[db_cluster] {} decommissioned while leading: {m:?}", gone.name());
    let wrote = vm_tests::cmd::poll(Duration::from_secs(30), || {
        (app_sql(&app, 5432, "insert into acks values (1000000)").code == 0).then_some(())
    });
    assert!(wrote.is_some(), "no write after the leader's decommission");
    for node in dbs.iter().chain([&app]) {
        converged(node);
    }

    // Canaries: the fleet secret and the passwords derived from it (read from Patroni's 0600
    // configuration) are nowhere else: not in the journal, the report, etcd's keys, or any
    // world-readable file under /etc and /var.
    let cfg = dbs[0].read_file("/etc/patroni/config.yml");
    let json: String = cfg.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    let v: serde_json::Value = serde_json::from_str(&json).expect("config.yml is JSON");
    let auth = &v["postgresql"]["authentication"];
    let mut needles: Vec<String> =
        [&v["restapi"]["authentication"]["password"], &auth["superuser"]["password"], &auth["replication"]["password"]]
            .iter()
            .map(|p| p.as_str().expect("a password").to_string())
            .collect();
    assert!(needles.iter().all(|n| n.len() == 48), "derived passwords: 48 hex digits");
    needles.push(CLUSTER_SECRET.to_string());
    needles.push(DB_PASSWORD.to_string());
    for node in &dbs {
        node.put_file("/root/needles", needles.join("\n").as_bytes(), 0o600);
        let hay = format!(
            "{}{}{}",
            node.journal(&[]),
            node.read_file("/var/lib/bootstrap/last-run.json"),
            node.run(&["etcdctl", "--endpoints=http://127.0.0.1:2379", "get", "--prefix", ""]).stdout
        );
        for n in &needles {
            assert!(!hay.contains(n.as_str()), "a secret is in {}'s journal, report or etcd", node.name());
        }
        let found =
            node.sh("find /etc /var -xdev -type f -perm -o+r -exec grep -l -F -f /root/needles {} + 2>/dev/null");
        assert_eq!(found.stdout.trim(), "", "world-readable files on {} hold a secret", node.name());
    }
}
