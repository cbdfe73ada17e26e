//! A small fleet on fresh nodes with knot for DNS: `./bootstrap db`, then `./bootstrap app`,
//! as an operator would. Proves: the db node registers its A and SRV records; the app node
//! discovers it and reaches PostgreSQL through its local haproxy pool with the secret password;
//! from outside the private network the db port is closed; password rotation end to end (the
//! old password refused); drift on the db node (pg_hba.conf edited, PostgreSQL stopped, its
//! SRV record deleted) listed by `--check` and healed in one run; rows survive re-runs of
//! `./bootstrap db`; both nodes converged (a run changes nothing, `--check` exits 0); and
//! `bootstrap decommission` removes the node's records and its schedule.

use std::time::Duration;

use vm_tests::operator::{download, serve_binary, INSTALLED};
use vm_tests::report::{apply, pending};
use vm_tests::{timed, Debian, Lab, Node, RunOpts, RunResult, Zone};

const PASSWORD: &str = "canary-db-Pw-0001";
const ROTATED: &str = "canary-db-Pw-0002";

/// The app node's database pool, one line per server.
fn pool(app: &Node) -> Vec<String> {
    let cfg = app.read_file("/etc/haproxy/haproxy.cfg");
    cfg.lines().filter(|l| l.trim_start().starts_with("server db")).map(|l| l.trim().to_string()).collect()
}

/// `bootstrap apply` with these site settings; the report (DNS states may fail).
fn apply_site(node: &Node, site: &str) -> vm_tests::report::RunReport {
    vm_tests::report::parse(&node.run(&[INSTALLED, "--site", site, "apply", "--json"]))
}

/// psql on the app node through the local pool, with the credentials bootstrap wrote.
fn app_sql(app: &Node, sql: &str) -> RunResult {
    app.run(&["sh", "-c", &format!("set -a; . /etc/bootstrap/app/database.env; psql -X -A -t -c \"{sql}\"")])
}

#[test]
fn db_and_app_nodes_find_each_other_and_stay_converged() {
    scenario(Debian::Bookworm);
}

#[test]
fn db_and_app_nodes_find_each_other_and_stay_converged_on_debian13() {
    scenario(Debian::Trixie);
}

fn scenario(debian: Debian) {
    let pg = debian.postgresql();
    let lab = Lab::on("fleet", debian);
    let knot = lab.start_knot(&[Zone::new("lab.test")]);
    let key = knot.tsig_key().clone();
    let http = lab.http_server(0);
    serve_binary(&http);
    let db = lab.boot("db1");
    let app = lab.boot("app1");
    let outsider = lab.boot("outsider");
    assert_eq!([db.addr().to_string(), app.addr().to_string()], ["198.18.0.10", "198.18.0.11"]);
    // 198.18.0.8/30 holds db1 and app1; the outsider (.12) and the lab host are outside it.
    let site = format!(
        "dns_zone = \"lab.test\"\ndns_server = \"198.18.0.1:53\"\ntsig_key_name = \"{}\"\nprivate_cidr = \"198.18.0.8/30\"\n",
        key.name
    );
    for node in [&db, &app] {
        download(node, &http);
        node.put_file("/root/site.toml", site.as_bytes(), 0o644);
    }
    app.sh("apt-get update -qq && apt-get install -y -qq postgresql-client >/dev/null").assert_ok("psql client");
    outsider.sh("apt-get update -qq && apt-get install -y -qq netcat-openbsd >/dev/null").assert_ok("nc");
    let secrets = RunOpts::default()
        .env("BOOTSTRAP_SECRET_DNS_TSIG_KEY", &key.secret)
        .env("BOOTSTRAP_SECRET_DB_PASSWORD", PASSWORD)
        .timeout(Duration::from_secs(600));

    let r = timed("./bootstrap db", || db.run_opts(&["/root/bootstrap", "--site", "/root/site.toml", "db"], &secrets));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(knot.query("db1.lab.test", "A"), ["198.18.0.10"]);
    assert_eq!(knot.query("_postgresql._tcp.lab.test", "SRV"), ["0 0 5432 db1.lab.test."]);

    // Look before installing, as README's first step says: a dry run given no secret plans
    // everything it can and shows what needs a secret as pending, with the reason.
    let r = app.run(&["/root/bootstrap", "--site", "/root/site.toml", "--check", "--json", "app"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let dry = vm_tests::report::parse(&r);
    for id in ["dns-address", "dns-https", "app-database-env"] {
        let s = vm_tests::report::state(&dry, id);
        assert_eq!(s.status, vm_tests::report::Status::Pending, "{s:?}");
        assert!(s.changes[0].summary.contains("needs secret"), "{s:?}");
    }
    assert_eq!(vm_tests::report::state(&dry, "landing-page").status, vm_tests::report::Status::Pending);
    assert!(!app.exists("/etc/bootstrap"), "the dry run wrote something");

    let r =
        timed("./bootstrap app", || app.run_opts(&["/root/bootstrap", "--site", "/root/site.toml", "app"], &secrets));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let cfg = app.read_file("/etc/haproxy/haproxy.cfg");
    assert!(cfg.contains("server db1.lab.test 198.18.0.10:5432 check"), "{cfg}");
    let one = app_sql(&app, "select 1").assert_ok("psql through haproxy");
    assert_eq!(one.stdout.trim(), "1");
    let wrong = app.run(&["sh", "-c", "PGPASSWORD=wrong-password psql -X -h 127.0.0.1 -U app -d app -c 'select 1'"]);
    assert_ne!(wrong.code, 0, "a wrong password was accepted");

    // The db port from inside and from outside the private network.
    assert_eq!(app.run(&["bash", "-c", "exec 3<>/dev/tcp/198.18.0.10/5432"]).code, 0, "app1 can't reach 5432");
    assert_ne!(
        outsider.run(&["nc", "-z", "-w", "2", "198.18.0.10", "5432"]).code,
        0,
        "5432 answers outside the private network"
    );
    assert_eq!(outsider.run(&["nc", "-z", "-w", "2", "198.18.0.10", "22"]).code != 0, !db.exists("/usr/sbin/sshd"));

    // Data that must survive every later run.
    app_sql(&app, "create table rows (n int); insert into rows select generate_series(1, 500)").assert_ok("rows");

    // Rotation: on the db node, then on the app node; the old password is refused.
    let set = |node: &Node, value: &str| {
        let r = node.run_opts(
            &[INSTALLED, "secret", "set", "db_password"],
            &RunOpts::default().env("BOOTSTRAP_SECRET_DB_PASSWORD", value),
        );
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        assert!(!format!("{}{}", r.stdout, r.stderr).contains("canary-db"), "rotation output leaked");
    };
    set(&db, ROTATED);
    assert_ne!(app_sql(&app, "select 1").code, 0, "the old password still works");
    set(&app, ROTATED);
    assert_eq!(app_sql(&app, "select count(*) from rows").assert_ok("after rotation").stdout.trim(), "500");

    // Drift on the db node: listed, then healed in one run.
    db.sh(&format!(
        "echo 'host all all 0.0.0.0/0 trust' >> /etc/postgresql/{pg}/main/pg_hba.conf && systemctl stop postgresql"
    ))
    .assert_ok("drift");
    knot.update("lab.test", &["delete _postgresql._tcp.lab.test. SRV"]);
    let listed = pending(&db);
    for id in ["pg-hba", "postgresql-service", "dns-postgresql"] {
        assert!(listed.contains(&id.to_string()), "{id} not listed: {listed:?}");
    }
    apply(&db);
    assert_eq!(knot.query("_postgresql._tcp.lab.test", "SRV"), ["0 0 5432 db1.lab.test."]);
    assert!(!db.read_file(&format!("/etc/postgresql/{pg}/main/pg_hba.conf")).contains("trust"));

    // Re-runs keep the data: the install command again, and a scheduled-style run.
    let again = db.run_opts(
        &["/root/bootstrap", "--site", "/root/site.toml", "db"],
        &RunOpts::default().timeout(Duration::from_secs(300)),
    );
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    apply(&db);
    assert_eq!(app_sql(&app, "select count(*) from rows").assert_ok("count").stdout.trim(), "500");

    // Both nodes converged.
    for node in [&db, &app] {
        assert_eq!(apply(node).changed, 0, "{} changed on a second run", node.name());
        assert_eq!(pending(node), Vec::<String>::new());
    }

    // The journal, by the documented fields, and each line readable on its own.
    let by_field = db.journal(&["-t", "bootstrap", "STATE=pg-hba"]);
    assert!(by_field.contains(&format!("pg-hba (file /etc/postgresql/{pg}/main/pg_hba.conf): changed")), "{by_field}");
    assert!(!db.journal(&["-t", "bootstrap", "KIND=file", "STATUS=changed"]).is_empty());

    // Leaving the fleet. A dry run shows what it would remove and changes nothing.
    let r = db.run(&[INSTALLED, "decommission", "--check"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("deregister db1.lab.test. A 198.18.0.10"), "{}", r.stdout);
    assert_eq!(knot.query("db1.lab.test", "A"), ["198.18.0.10"]);
    assert!(db.exists("/etc/cron.d/bootstrap"));

    // With DNS not answering: recorded, but the records can't go, so the schedule stays to retry.
    let knot_pid = knot.pid().expect("knot runs").to_string();
    lab.command("kill").args(["-STOP", &knot_pid]).status().unwrap();
    let r = db.run(&[INSTALLED, "decommission"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("the schedule stays and retries"), "{}", r.stderr);
    assert!(db.exists("/etc/cron.d/bootstrap"), "the schedule went while the records stayed");
    // `apply` (by hand, or the schedule) does not rejoin; `status` says where the node is.
    let r = db.run(&[INSTALLED, "apply"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("this node left the fleet") && r.stderr.contains("bootstrap db"), "{}", r.stderr);
    let status = db.run(&[INSTALLED, "status"]).stdout;
    assert!(status.contains("decommissioned") && status.contains("the schedule retries"), "{status}");
    // The app node, meanwhile: a DNS failure keeps its pool.
    apply_site(&app, "/etc/bootstrap/site.toml");
    assert_eq!(pool(&app), ["server db1.lab.test 198.18.0.10:5432 check"], "a DNS failure emptied the pool");
    lab.command("kill").args(["-CONT", &knot_pid]).status().unwrap();

    // DNS back: the schedule's next run finishes leaving (records, then the schedule) and
    // still refuses to rejoin.
    let r = db.run(&[INSTALLED, "apply"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("this node left the fleet"), "{}", r.stderr);
    assert_eq!(knot.query("_postgresql._tcp.lab.test", "SRV"), Vec::<String>::new());
    assert_eq!(knot.query("db1.lab.test", "A"), Vec::<String>::new());
    assert!(!db.exists("/etc/cron.d/bootstrap"));
    assert_eq!(knot.query("app1.lab.test", "A"), ["198.18.0.11"]);
    assert!(db.run(&[INSTALLED, "status"]).stdout.contains("its records and schedule are gone"));
    let r = db.run(&[INSTALLED, "--check"]);
    assert_eq!(r.code, 0, "nothing is left to remove: {}\n{}", r.stdout, r.stderr);

    // The app node: the empty SRV answer is an answer. The peer stays through the grace
    // period (60 minutes by default), then leaves the pool; set to 0 here.
    apply_site(&app, "/etc/bootstrap/site.toml");
    assert_eq!(pool(&app).len(), 1, "the peer left before the grace period");
    let grace0 = format!("{site}peer_grace_minutes = 0\n");
    app.put_file("/root/grace0.toml", grace0.as_bytes(), 0o644);
    apply_site(&app, "/root/grace0.toml");
    assert_eq!(pool(&app), Vec::<String>::new(), "a decommissioned db node stayed in the pool");

    // Installed again: back in DNS, scheduled, in the app's pool (same server name).
    let r = db.run_opts(
        &["/root/bootstrap", "--site", "/root/site.toml", "db"],
        &RunOpts::default().timeout(Duration::from_secs(300)),
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(knot.query("_postgresql._tcp.lab.test", "SRV"), ["0 0 5432 db1.lab.test."]);
    assert!(db.exists("/etc/cron.d/bootstrap"));
    assert!(!db.run(&[INSTALLED, "status"]).stdout.contains("decommissioned"));
    apply(&app);
    assert_eq!(pool(&app), ["server db1.lab.test 198.18.0.10:5432 check"]);
    assert_eq!(app_sql(&app, "select count(*) from rows").assert_ok("count").stdout.trim(), "500");
    for node in [&db, &app] {
        assert_eq!(apply(node).changed, 0, "{} changed on a second run", node.name());
        assert_eq!(pending(node), Vec::<String>::new());
    }

    // The canaries appear in no output and no journal.
    for node in [&db, &app] {
        let journal = node.exec(&["journalctl", "--no-pager", "-o", "verbose", "-t", "bootstrap"]).stdout;
        assert!(!journal.contains("canary-db"), "{} logged a password", node.name());
        assert!(!node.read_file("/var/lib/bootstrap/last-run.json").contains("canary-db"));
    }
}
