//! The db role on a fresh Debian node, as an operator runs it: wget, `./bootstrap db` with the
//! database password from the environment (a canary) and a site file naming the private
//! network. PostgreSQL installs and listens on localhost and the node's private address only;
//! the application's user logs in with the secret (from the node and from a peer on the
//! private network), a wrong password is refused; the second run changes nothing; rotation
//! swaps the password; drift (pg_hba.conf edited, PostgreSQL stopped) shows in `--check` and
//! heals in one run; a configuration change restarts or reloads as it must; rows survive
//! every re-run; the canaries appear nowhere: outputs, journal, report, command lines,
//! PostgreSQL's log, world-readable files.

use std::time::{Duration, Instant};

use vm_tests::cmd::wait_for;
use vm_tests::operator::{download, serve_binary, DOWNLOADED, INSTALLED};
use vm_tests::report::{self, RunReport, Status};
use vm_tests::{timed, Debian, Lab, Node, RunResult};

const CANARY: &str = "canary-Db9q-first-password";
const ROTATED: &str = "canary-Db9q-rotated-password";
const PW_FILE: &str = "/root/db-password";
const NEW_PW_FILE: &str = "/root/db-password-new";

/// Every output the test saw, searched for the canaries at the end.
#[derive(Default)]
struct Outputs(std::cell::RefCell<String>);

impl Outputs {
    fn keep(&self, r: RunResult) -> RunResult {
        let mut all = self.0.borrow_mut();
        all.push_str(&r.stdout);
        all.push_str(&r.stderr);
        r
    }
}

/// `BIN ARGS` with the database password exported from a 0600 file by the shell: the value
/// is on no command line, not even systemd-run's.
fn with_password(node: &Node, file: &str, bin: &str, args: &str) -> RunResult {
    node.sh(&format!("BOOTSTRAP_SECRET_DB_PASSWORD=$(cat {file}) exec {bin} {args}"))
}

/// psql as the application would connect, the password from a 0600 file.
fn app_psql(node: &Node, pw_file: &str, host: &str, sql: &str) -> RunResult {
    node.sh(&format!(
        "PGPASSWORD=$(cat {pw_file}) exec psql -X -A -t -v ON_ERROR_STOP=1 'host={host} user=app dbname=app connect_timeout=5' -c '{sql}'"
    ))
}

fn superuser_psql(node: &Node, sql: &str) -> String {
    node.exec(&["runuser", "-u", "postgres", "--", "env", "-C", "/", "psql", "-X", "-A", "-t", "-c", sql])
        .assert_ok(sql)
        .stdout
        .trim()
        .to_string()
}

/// `argv` as postgres with an empty environment, from `/`: the way bootstrap runs validators.
fn as_postgres(node: &Node, argv: &[&str]) -> RunResult {
    let mut full = vec!["runuser", "-u", "postgres", "--", "env", "-i", "-C", "/"];
    full.extend_from_slice(argv);
    node.exec(&full)
}

/// `report::apply`, its output kept.
fn apply(node: &Node, out: &Outputs) -> RunReport {
    report::applied(&out.keep(node.run(report::APPLY)))
}

/// `report::check`, its output kept.
fn check(node: &Node, out: &Outputs) -> (i32, RunReport) {
    report::checked(&out.keep(node.run(report::CHECK)))
}

/// The notifications a run carried out, with their outcome.
fn notifications(r: &RunReport) -> Vec<(&str, Status)> {
    r.notifications.iter().map(|n| (n.notification.as_str(), n.status)).collect()
}

fn cluster_pid(node: &Node) -> String {
    let unit = format!("postgresql@{}-main", node.debian().postgresql());
    let pid = node.exec(&["systemctl", "show", "--value", "-p", "MainPID", &unit]).assert_ok("MainPID").stdout;
    pid.trim().to_string()
}

fn rows(node: &Node) -> String {
    app_psql(node, NEW_PW_FILE, "127.0.0.1", "SELECT count(*) FROM orders")
        .assert_ok("count rows")
        .stdout
        .trim()
        .to_string()
}

/// Waits (a reload is a signal, carried out asynchronously) until `SHOW name` gives `value`.
fn wait_for_setting(node: &Node, name: &str, value: &str) {
    wait_for(&format!("{name} to be {value}"), Duration::from_secs(10), || {
        (superuser_psql(node, &format!("SHOW {name}")) == value).then_some(())
    });
}

/// TCP listeners on 5432, as `ss` shows them.
fn listeners(node: &Node) -> Vec<String> {
    let out = node.exec(&["ss", "-Hltn", "sport = :5432"]).assert_ok("ss").stdout;
    let mut v: Vec<String> = out.lines().filter_map(|l| l.split_whitespace().nth(3).map(str::to_string)).collect();
    v.sort();
    v
}

#[test]
fn db_role_installs_converges_rotates_heals_and_keeps_data() {
    scenario(Debian::Bookworm);
}

#[test]
fn db_role_installs_converges_rotates_heals_and_keeps_data_on_debian13() {
    scenario(Debian::Trixie);
}

fn scenario(debian: Debian) {
    // PostgreSQL's major version, in its paths and unit names.
    let pg = debian.postgresql();
    let total = Instant::now();
    let lab = Lab::on("db_role", debian);
    let http = lab.http_server(0);
    serve_binary(&http);
    let node = lab.boot("db1");
    let addr = node.addr().to_string();
    let out = Outputs::default();
    download(&node, &http);
    // Until the db role opens 5432 to `private_cidr` itself (the firewall part of issue 6),
    // the site does, so a peer can connect through the node's default-drop firewall.
    node.put_file(
        "/root/site.toml",
        b"private_cidr = \"198.18.0.0/24\"\nfirewall_extra = [\"tcp/5432 from 198.18.0.0/24\"]\n",
        0o644,
    );
    node.put_file(PW_FILE, CANARY.as_bytes(), 0o600);
    node.put_file(NEW_PW_FILE, ROTATED.as_bytes(), 0o600);

    // Sample every process's command line while the runs go on.
    node.exec(&[
        "systemd-run", "--unit=cmdline-sampler", "--collect", "sh", "-c",
        "while [ ! -e /tmp/stop-sampler ]; do for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done; done > /tmp/cmdlines 2>/dev/null",
    ])
    .assert_ok("start sampler");

    // A dry run on the fresh node: PostgreSQL is not installed, so its states are pending
    // (planned once the package is there), nothing fails, nothing changes.
    let r = out.keep(with_password(&node, PW_FILE, DOWNLOADED, "--site /root/site.toml --check --json db"));
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let plan = report::parse(&r);
    assert_eq!(plan.failed, 0, "{}", r.stdout);
    for id in ["postgresql-package", "postgresql-service", "postgresql-cluster", "db-user", "db-database"] {
        assert!(plan.ids_with(Status::Pending).contains(&id.to_string()), "{id} not pending: {}", r.stdout);
    }
    assert!(!node.exists("/usr/lib/postgresql") && !node.exists("/etc/bootstrap"));

    // Install and converge.
    let t = Instant::now();
    let r = out.keep(with_password(&node, PW_FILE, DOWNLOADED, "--site /root/site.toml db"));
    let install = t.elapsed();
    assert_eq!(r.code, 0, "install failed:\n{}\n{}", r.stdout, r.stderr);
    eprintln!("[timing] ./bootstrap db on a fresh node (PostgreSQL included): {:.1}s", install.as_secs_f64());

    // Listening on localhost and the private address only; the files as intended.
    let tcp = listeners(&node);
    assert!(tcp.contains(&"127.0.0.1:5432".to_string()) && tcp.contains(&format!("{addr}:5432")), "{tcp:?}");
    assert!(
        tcp.iter().all(|l| ["127.0.0.1:5432", "[::1]:5432", &format!("{addr}:5432")].contains(&l.as_str())),
        "{tcp:?}"
    );
    assert_eq!(
        node.exec(&["stat", "-c", "%a %U %G", &format!("/etc/postgresql/{pg}/main/pg_hba.conf")]).stdout.trim(),
        "640 postgres postgres"
    );
    assert_eq!(superuser_psql(&node, "SHOW password_encryption"), "scram-sha-256");
    assert_eq!(superuser_psql(&node, "SELECT pg_encoding_to_char(encoding) || ' ' || pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'app'"), "UTF8 app");
    assert!(superuser_psql(&node, "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
        .starts_with("SCRAM-SHA-256$4096:"));

    // The application's user logs in with the secret, locally and over the private network;
    // a wrong password, the superuser over TCP and other databases are refused.
    assert_eq!(app_psql(&node, PW_FILE, "127.0.0.1", "SELECT current_user").assert_ok("login").stdout.trim(), "app");
    assert_eq!(
        app_psql(&node, PW_FILE, &addr, "SELECT current_user").assert_ok("login via private address").stdout.trim(),
        "app"
    );
    let from_peer = lab
        .command("psql")
        .args([
            "-X",
            "-A",
            "-t",
            &format!("host={addr} user=app dbname=app connect_timeout=5"),
            "-c",
            "SELECT inet_server_addr()",
        ])
        .env("PGPASSWORD", CANARY)
        .output()
        .unwrap();
    assert!(from_peer.status.success(), "from the lab host: {}", String::from_utf8_lossy(&from_peer.stderr));
    node.put_file("/root/wrong-password", b"not-the-password", 0o600);
    let wrong = app_psql(&node, "/root/wrong-password", "127.0.0.1", "SELECT 1");
    assert!(!wrong.success() && wrong.stderr.contains("password authentication failed"), "{wrong:?}");
    let su = node.sh("PGPASSWORD=x psql -X 'host=127.0.0.1 user=postgres dbname=postgres' -c 'SELECT 1'");
    assert!(su.stderr.contains("no pg_hba.conf entry"), "{su:?}");
    let other = node
        .sh(&format!("PGPASSWORD=$(cat {PW_FILE}) psql -X 'host=127.0.0.1 user=app dbname=postgres' -c 'SELECT 1'"));
    assert!(other.stderr.contains("no pg_hba.conf entry"), "{other:?}");

    // Data the application wrote.
    app_psql(&node, PW_FILE, "127.0.0.1", "CREATE TABLE orders (id serial PRIMARY KEY, item text); INSERT INTO orders (item) SELECT md5(g::text) FROM generate_series(1, 1000) g")
        .assert_ok("write rows");

    // The second run changes nothing, restarts nothing; --check agrees.
    let pid = cluster_pid(&node);
    let r = apply(&node, &out);
    assert_eq!(r.changed, 0, "{r:?}");
    assert!(notifications(&r).is_empty(), "{r:?}");
    assert_eq!(check(&node, &out).0, 0);
    assert_eq!(cluster_pid(&node), pid);
    let ms = |id: &str| report::state(&r, id).duration_ms;
    eprintln!(
        "[timing] no-op engine run: {} ms; pg_role {} ms (the shared observation on the socket), pg_database {} ms",
        r.duration_ms,
        ms("db-user"),
        ms("db-database")
    );
    let noop = node.exec(&[
        "sh",
        "-c",
        &format!("s=$(date +%s%N); {INSTALLED} apply >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000 ))"),
    ]);
    let noop_us: u64 = noop.stdout.trim().parse().unwrap_or_else(|_| panic!("{noop:?}"));
    eprintln!("[timing] no-op `bootstrap apply` of the db role: {:.1} ms wall", noop_us as f64 / 1000.0);

    // Rotation: the new password works at once, the old one no longer does.
    let r = out.keep(with_password(&node, NEW_PW_FILE, INSTALLED, "secret set db_password"));
    assert_eq!(r.code, 0, "rotation failed:\n{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        app_psql(&node, NEW_PW_FILE, "127.0.0.1", "SELECT current_user").assert_ok("new password").stdout.trim(),
        "app"
    );
    let old = app_psql(&node, PW_FILE, "127.0.0.1", "SELECT 1");
    assert!(!old.success() && old.stderr.contains("password authentication failed"), "{old:?}");
    assert_eq!(apply(&node, &out).changed, 0);

    // Drift: pg_hba.conf opened to everyone and PostgreSQL stopped. --check lists both (the
    // database states wait on the service), one run heals, the rows are there.
    // (Stopping the umbrella unit returns before the cluster's own unit has stopped: wait until
    // it is inactive, not merely not active (`deactivating`), or a dry run that observes at once
    // may still find PostgreSQL answering.)
    node.sh(&format!("echo 'host all all 0.0.0.0/0 trust' >> /etc/postgresql/{pg}/main/pg_hba.conf && systemctl stop postgresql \
         && while [ \"$(systemctl show -p ActiveState --value postgresql@{pg}-main)\" != inactive ]; do sleep 0.2; done"))
        .assert_ok("drift");
    let (code, plan) = check(&node, &out);
    assert_eq!(code, 2);
    assert_eq!(
        plan.ids_with(Status::Pending),
        ["pg-hba", "postgresql-service", "postgresql-cluster", "db-user", "db-database"],
        "{plan:?}"
    );
    let r = timed("heal pg_hba.conf + stopped PostgreSQL", || apply(&node, &out));
    assert_eq!(r.ids_with(Status::Changed), ["pg-hba", "postgresql-service"], "{r:?}");
    assert!(!node.read_file(&format!("/etc/postgresql/{pg}/main/pg_hba.conf")).contains("trust"));
    assert_eq!(rows(&node), "1000");
    assert_eq!(check(&node, &out).0, 0);

    // The cluster unit stopped on its own (the umbrella unit stays active): seen and healed.
    node.exec(&["systemctl", "stop", &format!("postgresql@{pg}-main")]).assert_ok("stop the cluster");
    let (code, plan) = check(&node, &out);
    assert_eq!(
        (code, plan.ids_with(Status::Pending)),
        (2, vec!["postgresql-cluster".to_string(), "db-user".into(), "db-database".into()]),
        "{plan:?}"
    );
    assert_eq!(apply(&node, &out).ids_with(Status::Changed), ["postgresql-cluster"]);
    assert_eq!(rows(&node), "1000");

    // A reload-only setting edited (and loaded by hand): the file is restored and the reload,
    // through Debian's umbrella unit, reaches the cluster; no restart. listen_addresses
    // edited: one restart.
    let pid = cluster_pid(&node);
    node.sh(&format!("echo 'work_mem = 1MB' >> /etc/postgresql/{pg}/main/conf.d/50-bootstrap.conf && systemctl reload postgresql@{pg}-main"))
        .assert_ok("edit settings");
    wait_for_setting(&node, "work_mem", "1MB");
    let r = apply(&node, &out);
    assert_eq!(
        (r.ids_with(Status::Changed), notifications(&r)),
        (vec!["postgresql-settings".to_string()], vec![("reload postgresql", Status::Changed)])
    );
    wait_for_setting(&node, "work_mem", "4MB");
    assert_eq!(cluster_pid(&node), pid, "a reload must not restart");
    node.sh(&format!("sed -i 's/localhost,/localhost, /' /etc/postgresql/{pg}/main/conf.d/50-bootstrap-listen.conf"))
        .assert_ok("edit listen");
    let r = apply(&node, &out);
    assert_eq!(
        (r.ids_with(Status::Changed), notifications(&r)),
        (vec!["postgresql-listen".to_string()], vec![("restart postgresql", Status::Changed)])
    );
    assert_ne!(cluster_pid(&node), pid, "listen_addresses needs a restart");
    assert_eq!(apply(&node, &out).changed, 0);

    // The validators refuse what PostgreSQL would refuse.
    node.put_file(
        "/var/tmp/bad-hba.conf",
        b"local all postgres peer\nhost app app 198.18.0.0/33 scram-sha-256\n",
        0o644,
    );
    let bad = as_postgres(&node, &["/usr/local/lib/bootstrap/pg-hba-check", "/var/tmp/bad-hba.conf"]);
    assert!(bad.code == 1 && bad.stderr.contains("invalid CIDR mask") && bad.stderr.contains("line 2"), "{bad:?}");
    node.put_file("/var/tmp/bad.conf", b"listen_addresses = 'localhost'\nlisten_adresses = '*'\n", 0o644);
    let bad = as_postgres(
        &node,
        &[
            &format!("/usr/lib/postgresql/{pg}/bin/postgres"),
            "-D",
            &format!("/var/lib/postgresql/{pg}/main"),
            "-c",
            "config_file=/var/tmp/bad.conf",
            "-C",
            "listen_addresses",
        ],
    );
    assert!(
        bad.code != 0 && bad.stderr.contains("unrecognized configuration parameter \"listen_adresses\""),
        "{bad:?}"
    );

    // Re-running the installer and a scheduled-style run keep every row.
    let r = out.keep(with_password(&node, NEW_PW_FILE, DOWNLOADED, "--site /root/site.toml db"));
    assert_eq!(r.code, 0, "re-install failed:\n{}\n{}", r.stdout, r.stderr);
    assert_eq!(node.exec(&["sh", "-c", &format!("{INSTALLED} apply >/dev/null 2>&1")]).code, 0);
    assert_eq!(rows(&node), "1000");
    assert_eq!(check(&node, &out).0, 0);

    // The canaries are nowhere.
    node.exec(&["touch", "/tmp/stop-sampler"]).assert_ok("stop sampler");
    std::thread::sleep(Duration::from_millis(500));
    let cmdlines = node.read_file("/tmp/cmdlines");
    assert!(cmdlines.contains("bootstrap") && cmdlines.contains("psql"), "the sampler saw no run");
    let journal = node.exec(&["journalctl", "--no-pager", "-o", "verbose"]).assert_ok("journal").stdout;
    let pg_log = node.sh("cat /var/log/postgresql/*.log").assert_ok("postgresql log").stdout;
    let world_readable = node
        .sh("find / -xdev \\( -path /proc -o -path /sys -o -path /srv/repo \\) -prune -o -type f -perm -0004 -print0 | xargs -0 grep -l -F -e canary-Db9q 2>/dev/null; true")
        .stdout;
    let outputs = out.0.borrow().clone();
    for (what, text) in [
        ("outputs", outputs.as_str()),
        ("journal", journal.as_str()),
        ("last-run.json", &node.read_file("/var/lib/bootstrap/last-run.json")),
        ("command lines", cmdlines.as_str()),
        ("PostgreSQL log", pg_log.as_str()),
        ("world-readable files", world_readable.as_str()),
    ] {
        assert!(!text.contains("canary-Db9q"), "a canary in the {what}");
    }
    // Not even the verifiers reach the server's log.
    assert!(!pg_log.contains("SCRAM-SHA-256$"), "{pg_log}");
    eprintln!("[timing] db_role total: {:.1}s", total.elapsed().as_secs_f64());
}
