//! `pg_role`, `pg_database` and the SCRAM verifiers behind them: known vectors made by a real
//! PostgreSQL 15, planning and applying against a fake psql, secrets kept out of every command
//! line and summary, and the db role's templates rendered both ways (localhost only, private
//! network).

mod fake;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use states::engine::report::Status;
use states::engine::run::Node;

use states::engine::runner::{Cmd, Output};
use states::sys::scram::{self, Verifier};

use states::Context;

const SECRET: &str = "canary-db-pw-5Gx81";
const ROTATED: &str = "canary-db-pw-rotated";

/// `CREATE ROLE t LOGIN PASSWORD 'pencil'` and `... t2 ... 'correct horse battery staple!'`
/// on PostgreSQL 15.18 with password_encryption = scram-sha-256.
const PG_PENCIL: &str = "SCRAM-SHA-256$4096:0TmXXA6CPqfv4J2OENf78w==$cKhgX0AabnifgjYTwEWK3/IP+sXffesDDurS10yOyE0=:iMqi0cy+uKhMHcqqZ+MKk4YhGGxPGHLeP8xbTptH8cg=";
const PG_HORSE: &str = "SCRAM-SHA-256$4096:K2EkgG/VTCBj6ib9FUJWzg==$H5QQNO264YZF/vKZclkwjQ0ZhQlHZX6I9F7T0o0KNzU=:wnx2Q6YIkQj0kxlfROHoGNDpdhkoGc4ObL0PlnnwpI4=";

#[test]
fn scram_verifiers_match_postgresql() {
    for (pw, stored) in [("pencil", PG_PENCIL), ("correct horse battery staple!", PG_HORSE)] {
        let v = Verifier::parse(stored).expect("parses");
        assert_eq!(v.iterations, 4096);
        assert!(v.matches(pw), "{pw}");
        assert!(!v.matches("pencil2"));
        assert_eq!(Verifier::compute(pw, &v.salt, 4096), v);
        assert_eq!(v.to_string(), stored, "round trip");
    }
    let fresh = Verifier::new("pencil").unwrap();
    assert_eq!((fresh.salt.len(), fresh.iterations), (16, 4096));
    assert!(fresh.matches("pencil") && Verifier::parse(&fresh.to_string()) == Some(fresh.clone()));
    assert_ne!(Verifier::new("pencil").unwrap().salt, fresh.salt, "a new salt each time");
    for bad in
        ["md5c4b6b2b0f6e4a9b1f1d6", "pencil", "SCRAM-SHA-256$x:AA==$AA==:AA==", "SCRAM-SHA-256$4096:AA==$AA==:AA=="]
    {
        assert!(Verifier::parse(bad).is_none(), "{bad}");
    }
    assert!(scram::usable_password("ab c~!'\"$"));
    assert!(!scram::usable_password("pässword") && !scram::usable_password("tab\there") && !scram::usable_password(""));
}

/// A fake server: answers the observation query from `roles`/`databases` and carries out the
/// statements the states send, recording every command with its stdin.
#[derive(Default)]
struct FakePg {
    roles: BTreeMap<String, (bool, Option<String>)>,
    databases: BTreeMap<String, String>,
    /// Commands run, with their stdin.
    seen: Vec<(Cmd, String)>,
    /// The server is down: every psql fails.
    down: bool,
    /// A replica (in recovery): read-only.
    replica: bool,
}

type Pg = Arc<Mutex<FakePg>>;

/// The bytes a Cmd carries on stdin (private to the runner; its Debug form shows them).
fn stdin_of(cmd: &Cmd) -> String {
    let dbg = format!("{cmd:?}");
    let Some(start) = dbg.find("stdin: Some([") else { return String::new() };
    let list = &dbg[start + 13..];
    let bytes: Vec<u8> =
        list[..list.find(']').unwrap()].split(", ").filter(|s| !s.is_empty()).map(|b| b.parse().unwrap()).collect();
    String::from_utf8(bytes).unwrap()
}

fn respond(pg: &Pg, cmd: &Cmd) -> Output {
    let sql = stdin_of(cmd);
    let mut pg = pg.lock().unwrap();
    pg.seen.push((cmd.clone(), sql.clone()));
    assert_eq!(cmd.program, "setpriv");
    assert!(cmd.args.starts_with(&["--reuid=postgres".into(), "--regid=postgres".into()]), "{:?}", cmd.args);
    if pg.down {
        return fake::fail(2, "psql: error: connection to server on socket \"/var/run/postgresql/.s.PGSQL.5432\" failed: No such file or directory");
    }
    if sql.starts_with("SELECT json_build_object") {
        let roles: serde_json::Map<String, serde_json::Value> = pg
            .roles
            .iter()
            .map(|(n, (login, pw))| {
                (n.clone(), serde_json::json!({ "login": login, "replication": false, "password": pw }))
            })
            .collect();
        let out = serde_json::json!({ "in_recovery": pg.replica, "roles": roles, "databases": pg.databases });
        return Output { code: Some(0), stdout: format!("{out}\n"), stderr: String::new() };
    }
    assert!(!pg.replica, "a statement was sent to a replica: {sql}");
    for stmt in sql.lines().filter(|l| !l.starts_with("SET ")) {
        let words: Vec<&str> = stmt.trim_end_matches(';').split(' ').collect();
        let name = |i: usize| words[i].trim_matches('"').to_string();
        let password = || {
            let i = words.iter().position(|w| *w == "PASSWORD").unwrap();
            Some(words[i + 1].trim_matches('\'').to_string())
        };
        match (words[0], words[1]) {
            ("CREATE", "ROLE") => {
                let pw = if words.contains(&"PASSWORD") { password() } else { None };
                pg.roles.insert(name(2), (words.contains(&"LOGIN"), pw));
            }
            ("ALTER", "ROLE") => {
                let n = name(2);
                if words.contains(&"PASSWORD") {
                    pg.roles.get_mut(&n).unwrap().1 = password();
                }
                if words.contains(&"LOGIN") || words.contains(&"NOLOGIN") {
                    pg.roles.get_mut(&n).unwrap().0 = words.contains(&"LOGIN");
                }
            }
            ("CREATE", "DATABASE") => {
                let o = name(words.iter().position(|w| *w == "OWNER").unwrap() + 1);
                pg.databases.insert(name(2), o);
            }
            ("ALTER", "DATABASE") => {
                let o = name(5);
                pg.databases.insert(name(2), o);
            }
            other => panic!("unexpected statement {other:?}: {stmt}"),
        }
    }
    fake::ok()
}

/// A context on the fake server `pg`. The pg states act on the running system only: the root
/// is `/`, the runner is fake.
fn cx_on(pg: &Pg, secret: &str) -> Context {
    let p = pg.clone();
    let (mut cx, _log) = fake::cx(Path::new("/"), move |c| respond(&p, c));
    cx.secrets.insert("db_password", secret.into());
    cx
}

fn pg_cx(secret: &str) -> (Context, Pg) {
    let pg: Pg = Default::default();
    (cx_on(&pg, secret), pg)
}

const ROLE: &str = r#"
[[state]]
id = "db-user"
type = "pg_role"
name = "app"
password_secret = "db_password"

[[state]]
id = "db"
type = "pg_database"
name = "app"
owner = "app"
requires = ["db-user"]
"#;

fn summaries(r: &states::engine::report::RunReport, id: &str) -> Vec<String> {
    r.states.iter().find(|s| s.id == id).unwrap().changes.iter().map(|c| c.summary.clone()).collect()
}

fn psql_runs(pg: &Pg) -> usize {
    pg.lock().unwrap().seen.len()
}

#[test]
fn creates_role_and_database_then_changes_nothing() {
    let (cx, pg) = pg_cx(SECRET);
    let nodes = support::nodes(&cx, ROLE, &[]).unwrap();
    let plan = support::check(&cx, &nodes);
    assert_eq!(summaries(&plan, "db-user"), ["create role app (login, password from secret `db_password`)"]);
    // The database can't be planned before its owner exists: pending on the role.
    assert_eq!(support::status_of(&plan, "db"), Status::Pending);
    assert_eq!(psql_runs(&pg), 1, "one observation shared by both states");

    let r = support::apply(&cx, &nodes);
    assert_eq!((r.changed, r.failed), (2, 0), "{:?}", r.states.iter().map(|s| &s.error).collect::<Vec<_>>());
    let (login, stored) = pg.lock().unwrap().roles["app"].clone();
    assert!(login);
    let v = Verifier::parse(stored.as_deref().unwrap()).expect("a SCRAM verifier was sent");
    assert!(v.matches(SECRET));
    assert_eq!(pg.lock().unwrap().databases["app"], "app");
    let create_db = pg.lock().unwrap().seen.iter().find(|(_, s)| s.contains("CREATE DATABASE")).unwrap().1.clone();
    assert_eq!(create_db, "CREATE DATABASE \"app\" OWNER \"app\" ENCODING 'UTF8' TEMPLATE template0;\n");

    // Converged: nothing to do, the stored verifier is kept (not reset with a new salt).
    let cx2 = cx_on(&pg, SECRET);
    let again = support::apply(&cx2, &support::nodes(&cx2, ROLE, &[]).unwrap());
    assert_eq!((again.changed, again.unchanged), (0, 2));
    assert_eq!(pg.lock().unwrap().roles["app"].1, stored);
}

/// A context whose fake server starts with `roles` and `databases`.
fn with_server(secret: &str, roles: &[(&str, bool, Option<&str>)], dbs: &[(&str, &str)]) -> (Context, Pg) {
    let (cx, pg) = pg_cx(secret);
    {
        let mut p = pg.lock().unwrap();
        for (n, login, pw) in roles {
            p.roles.insert(n.to_string(), (*login, pw.map(str::to_string)));
        }
        for (d, o) in dbs {
            p.databases.insert(d.to_string(), o.to_string());
        }
    }
    (cx, pg)
}

#[test]
fn a_replica_plans_nothing_the_leader_does_it() {
    let (cx, pg) = pg_cx(SECRET);
    pg.lock().unwrap().replica = true;
    let nodes = support::nodes(&cx, ROLE, &[]).unwrap();
    let plan = support::check(&cx, &nodes);
    assert!(summaries(&plan, "db-user").is_empty(), "{:?}", summaries(&plan, "db-user"));
    assert!(summaries(&plan, "db").is_empty());
    assert_eq!(support::status_of(&plan, "db"), Status::Unchanged);
    assert_eq!(psql_runs(&pg), 1);
}

#[test]
fn rotated_secret_md5_and_login_drift_are_seen() {
    let old = Verifier::new(SECRET).unwrap().to_string();
    let (cx, pg) = with_server(ROTATED, &[("app", true, Some(&old))], &[("app", "app")]);
    let nodes = support::nodes(&cx, ROLE, &[]).unwrap();
    let plan = support::check(&cx, &nodes);
    assert_eq!(summaries(&plan, "db-user"), ["password differs: set it from secret `db_password`"]);
    assert_eq!(support::status_of(&plan, "db"), Status::Unchanged);
    let r = support::apply(&cx, &nodes);
    assert_eq!(r.changed, 1);
    let stored = pg.lock().unwrap().roles["app"].1.clone().unwrap();
    assert!(Verifier::parse(&stored).unwrap().matches(ROTATED));
    let alter = pg.lock().unwrap().seen.iter().find(|(_, s)| s.contains("ALTER ROLE")).unwrap().1.clone();
    assert!(alter.starts_with("SET log_statement = 'none';\n"), "{alter}");
    assert!(alter.contains("ALTER ROLE \"app\" WITH PASSWORD 'SCRAM-SHA-256$4096:"), "{alter}");

    let (cx, _) =
        with_server(SECRET, &[("app", false, Some("md5a3556571e93b0d20722ba62be61e8c2d"))], &[("app", "postgres")]);
    let plan = support::check(&cx, &support::nodes(&cx, ROLE, &[]).unwrap());
    assert_eq!(
        summaries(&plan, "db-user"),
        ["allow login", "password not stored as SCRAM-SHA-256: set it from secret `db_password`"]
    );
    assert_eq!(summaries(&plan, "db"), ["owner postgres -> app"]);

    let (cx, _) = with_server(SECRET, &[("app", true, None)], &[]);
    let plan = support::check(&cx, &support::nodes(&cx, ROLE, &[]).unwrap());
    assert_eq!(summaries(&plan, "db-user"), ["no password set: set it from secret `db_password`"]);
    assert_eq!(summaries(&plan, "db"), ["create database app (owner app, UTF8)"]);
}

#[test]
fn secrets_never_reach_argv_summaries_or_stdin_in_clear() {
    let old = Verifier::new(SECRET).unwrap().to_string();
    let (cx, pg) = with_server(ROTATED, &[("app", true, Some(&old))], &[]);
    let nodes = support::nodes(&cx, ROLE, &[]).unwrap();
    let plan = support::check(&cx, &nodes);
    let applied = support::apply(&cx, &nodes);
    for r in [&plan, &applied] {
        let text = serde_json::to_string(r).unwrap();
        assert!(!text.contains("canary-db-pw"), "{text}");
    }
    let seen = pg.lock().unwrap().seen.clone();
    assert!(seen.len() >= 4);
    for (cmd, stdin) in &seen {
        let line = cmd.display();
        assert!(!line.contains("canary") && !line.contains("SCRAM"), "{line}");
        assert!(!stdin.contains("canary"), "cleartext sent to the server: {stdin}");
        // As postgres, with an empty environment, the SQL on stdin only.
        let args = cmd.args.join(" ");
        assert!(
            args.starts_with("--reuid=postgres --regid=postgres --init-groups --pdeathsig keep env -i -C / "),
            "{args}"
        );
        assert!(args.ends_with("psql -X -q -A -t -v ON_ERROR_STOP=1 -d postgres"), "{args}");
    }
}

#[test]
fn server_down_fails_planning_clearly_and_dry_run_shows_pending() {
    let (cx, pg) = pg_cx(SECRET);
    pg.lock().unwrap().down = true;
    let nodes = support::nodes(&cx, ROLE, &[]).unwrap();
    let r = support::apply(&cx, &nodes);
    let err = r.states[0].error.clone().unwrap();
    assert!(err.contains("cannot reach PostgreSQL on its local socket") && err.contains("No such file"), "{err}");
    assert_eq!(support::status_of(&r, "db"), Status::Skipped);

    // A fresh node's dry run: the package state is pending, so the pg states are too.
    let role = format!(
        "{ROLE}\n[[state]]\nid = \"pkg\"\ntype = \"file\"\npath = \"/nonexistent-bootstrap-test/postgresql\"\ncontent = \"x\"\n"
    )
    .replace("password_secret = \"db_password\"", "password_secret = \"db_password\"\nrequires = [\"pkg\"]");
    let nodes = support::nodes(&cx, &role, &[]).unwrap();
    let plan = support::check(&cx, &nodes);
    assert_eq!(support::status_of(&plan, "pkg"), Status::Pending);
    assert_eq!(support::status_of(&plan, "db-user"), Status::Pending);
    assert_eq!(support::status_of(&plan, "db"), Status::Pending);
    let why = &summaries(&plan, "db-user")[0];
    assert!(why.starts_with("planned once `pkg` is applied (now: cannot reach PostgreSQL"), "{why}");
    assert_eq!(plan.failed, 0);
}

#[test]
fn bad_parameters_are_refused_at_compile_time() {
    let (cx, _) = pg_cx(SECRET);
    let (ascii, _) = pg_cx("pässwörd-long-enough");
    let bad_in = |cx: &Context, params: &str| -> String {
        let role = format!("[[state]]\nid = \"x\"\n{params}\n");
        match support::nodes(cx, &role, &[]) {
            Ok(_) => panic!("accepted: {params}"),
            Err(e) => format!("{e:#}"),
        }
    };
    let bad = |params: &str| bad_in(&cx, params);
    assert!(bad("type = \"pg_role\"\nname = \"App\"").contains("not a valid role name"));
    assert!(bad("type = \"pg_role\"\nname = \"pg_app\"").contains("not a valid role name"));
    assert!(bad("type = \"pg_role\"\nname = \"a\\\"; DROP\"").contains("not a valid role name"));
    assert!(bad("type = \"pg_role\"\nname = \"app\"\npassword_secret = \"nope\"").contains("secret `nope` is not set"));
    assert!(bad("type = \"pg_role\"\nname = \"app\"\npassword = \"x\"").contains("unknown field"));
    assert!(bad("type = \"pg_database\"\nname = \"app\"").contains("missing field `owner`"));
    assert!(bad("type = \"pg_database\"\nname = \"my-db\"\nowner = \"app\"").contains("not a valid database name"));
    assert!(bad_in(&ascii, "type = \"pg_role\"\nname = \"app\"\npassword_secret = \"db_password\"")
        .contains("printable ASCII"));
    // On a tree rather than the running system, planning says why not.
    let tree = tempfile::tempdir().unwrap();
    let (tcx, _) = fake::cx(tree.path(), |_| fake::ok());
    let nodes =
        support::nodes(&tcx, "[[state]]\nid = \"d\"\ntype = \"pg_database\"\nname = \"app\"\nowner = \"app\"\n", &[])
            .unwrap();
    let r = support::apply(&tcx, &nodes);
    assert!(r.states[0].error.as_deref().unwrap().contains("only be managed on the running system"));
}

/// The shipped db role compiled by the pipeline with these settings (and the node's
/// addresses 198.18.0.7 and 10.9.9.9); returns the plan's diffs by state id (a dry run on an
/// empty tree: every file is "created").
fn db_role_diffs(private_cidr: Option<&str>) -> (BTreeMap<String, String>, Vec<Node>) {
    let tree = tempfile::tempdir().unwrap();
    let (mut cx, _) = fake::cx(tree.path(), |_| fake::ok());
    cx.secrets.insert("db_password", SECRET.into());
    cx.facts.addresses = vec!["198.18.0.7".into(), "10.9.9.9".into()];
    let mut site = "site_name = \"t\"\ndb_name = \"shop\"\ndb_user = \"shopper\"\n".to_string();
    if let Some(cidr) = private_cidr {
        site += &format!("private_cidr = \"{cidr}\"\n");
    }
    let p = support::shipped(&mut cx, &["db"], &site, serde_json::json!({})).unwrap();
    let r = support::check(&p.cx, &p.nodes);
    let diffs = r
        .states
        .iter()
        .map(|s| (s.id.clone(), s.changes.iter().filter_map(|c| c.diff.clone()).collect::<Vec<_>>().join("\n")))
        .collect();
    (diffs, p.nodes)
}

/// The rules a diff of a new pg_hba.conf adds, whitespace normalised.
fn rules(diff: &str) -> Vec<String> {
    diff.lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .map(|l| l[1..].split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

#[test]
fn db_role_listens_on_localhost_only_without_a_private_network() {
    let (diffs, nodes) = db_role_diffs(None);
    let listen = &diffs["postgresql-listen"];
    assert!(listen.contains("+listen_addresses = 'localhost'\n"), "{listen}");
    let hba = &diffs["pg-hba"];
    assert_eq!(
        rules(hba),
        [
            "local all postgres peer",
            "host shop shopper 127.0.0.1/32 scram-sha-256",
            "host shop shopper ::1/128 scram-sha-256",
        ],
        "{hba}"
    );
    assert!(diffs["postgresql-settings"].contains("+password_encryption = 'scram-sha-256'"));
    let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    for id in
        ["postgresql-package", "pg-hba-check", "postgresql-service", "postgresql-cluster", "db-user", "db-database"]
    {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    assert!(!diffs.values().any(|d| d.contains("canary-db-pw")));
}

#[test]
fn db_role_opens_the_private_network() {
    let (diffs, nodes) = db_role_diffs(Some("198.18.0.0/24"));
    assert!(diffs["postgresql-listen"].contains("+listen_addresses = 'localhost,198.18.0.7'\n"));
    assert_eq!(rules(&diffs["pg-hba"])[3], "host shop shopper 198.18.0.0/24 scram-sha-256");
    assert_eq!(rules(&diffs["pg-hba"]).len(), 4);
    // Restart for what needs it, reload for the rest.
    let notify = |id: &str| {
        nodes.iter().find(|n| n.id.as_str() == id).unwrap().notify.iter().map(|n| n.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(notify("postgresql-listen"), ["restart postgresql"]);
    assert_eq!(notify("postgresql-settings"), ["reload postgresql"]);
    assert_eq!(notify("pg-hba"), ["reload postgresql"]);
}
