//! The embedded haproxy template, rendered over a range of settings and peer lists, checked by
//! the real `haproxy -c`: 0, 1, 5 and 100 db peers, IPv4 and IPv6, with and without upstreams.
//! An empty discovery result must still give a valid configuration.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use states::engine::facts::Facts;
use states::engine::secrets::Secrets;
use states::pipeline::data::{NodeData, Schedule, TemplateData};
use states::role::template::{Data, Templates};

const TEMPLATE: &str = include_str!("../../roles/templates/haproxy.cfg.hbs");

fn peers(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| {
                let address = if i % 2 == 0 {
                    format!("198.18.{}.{}", i / 200, 10 + i % 200)
                } else {
                    format!("2001:db8::{:x}", i)
                };
                json!({ "host": format!("db{i}.lab.test."), "name": format!("db{i}.lab.test"), "address": address, "port": 5432 })
            })
            .collect(),
    )
}

/// Render with `settings` and `n` db peers, point the files it names at test files, and ask
/// haproxy. Returns the rendered text.
fn check(dir: &Path, settings: Value, n: usize) -> String {
    check_as(dir, settings, n, false)
}

fn check_as(dir: &Path, settings: Value, n: usize, db_too: bool) -> String {
    check_with(dir, settings, n, db_too, NodeData::default(), json!([]))
}

/// As `check_as`, for this node and these discovered app nodes; settings the roles default are
/// filled in.
fn check_with(dir: &Path, mut settings: Value, n: usize, db_too: bool, node: NodeData, apps: Value) -> String {
    for (k, v) in [("admin_node", Value::Null), ("admin_paths", json!(["/admin"]))] {
        settings.as_object_mut().unwrap().entry(k).or_insert(v);
    }
    let mut t = Templates::new(&Secrets::default());
    t.add("haproxy.cfg.hbs", TEMPLATE).unwrap();
    let data = TemplateData {
        facts: Facts { hostname: "app1".into(), ..Default::default() },
        settings,
        roles: vec!["app".into()],
        schedule: Schedule { cron: "*/15 * * * *".into() },
        node,
        role: [("app".to_string(), true), ("db".to_string(), db_too)].into(),
        peers: json!({ "db": peers(n), "app": apps }),
        firewall: Vec::new(),
    }
    .to_value();
    let text = String::from_utf8(t.render("haproxy.cfg.hbs", &Data::new(data)).unwrap().bytes).unwrap();
    let local = text
        .replace("/etc/haproxy/certs/site.pem", dir.join("site.pem").to_str().unwrap())
        .replace("/var/www/bootstrap/index.html", dir.join("index.html").to_str().unwrap());
    let cfg = dir.join(format!("haproxy-{n}.cfg"));
    std::fs::write(&cfg, local).unwrap();
    let out =
        Command::new("haproxy").args(["-c", "-f"]).arg(&cfg).output().expect("haproxy is installed (scripts/setup)");
    assert!(
        out.status.success(),
        "haproxy rejected the config for {n} peers:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        text
    );
    text
}

fn test_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (key, crt) = (dir.path().join("k.pem"), dir.path().join("c.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=app1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let pem = [std::fs::read(&crt).unwrap(), std::fs::read(&key).unwrap()].concat();
    std::fs::write(dir.path().join("site.pem"), pem).unwrap();
    std::fs::write(dir.path().join("index.html"), "<h1>app1</h1>\n").unwrap();
    dir
}

#[test]
fn landing_page_with_0_1_5_and_100_db_peers() {
    let dir = test_dir();
    let settings = json!({ "upstreams": null, "health_path": "/", "acme_challenge_port": 8402 });
    for n in [0, 1, 5, 100] {
        let text = check(dir.path(), settings.clone(), n);
        let servers: Vec<&str> = text.lines().filter(|l| l.trim_start().starts_with("server db")).collect();
        assert_eq!(servers.len(), n);
        assert_eq!(servers.iter().filter(|l| l.ends_with(" backup")).count(), n.saturating_sub(1));
        assert!(text.contains("http-request return status 200"));
    }
    let text = check(dir.path(), settings, 2);
    assert!(text.contains("server db1.lab.test [2001:db8::1]:5432 check backup"), "{text}");
}

#[test]
fn upstreams_with_health_checks() {
    let dir = test_dir();
    let settings = json!({
        "upstreams": ["198.18.0.30:8080", "[2001:db8::30]:8080", "app-b.lab.test:8080"],
        "health_path": "/healthz",
        "acme_challenge_port": 8402,
    });
    let text = check(dir.path(), settings, 1);
    assert!(text.contains("option httpchk GET /healthz"));
    assert!(text.contains("server app-b.lab.test:8080 app-b.lab.test:8080 check"), "{text}");
    assert!(text.contains("server _2001:db8::30_:8080 [2001:db8::30]:8080 check"), "{text}");
    assert!(!text.contains("http-request return"));
}

#[test]
fn a_node_with_the_db_role_too_has_no_pool_on_5432() {
    let dir = test_dir();
    let settings = json!({ "upstreams": null, "health_path": "/", "acme_challenge_port": 8402 });
    let text = check_as(dir.path(), settings, 1, true);
    assert!(!text.contains("127.0.0.1:5432"), "the pool would clash with PostgreSQL:\n{text}");
}

#[test]
fn server_names_stay_when_a_peer_leaves() {
    let dir = test_dir();
    let settings = json!({ "upstreams": null, "health_path": "/", "acme_challenge_port": 8402 });
    let lines = |n| -> Vec<String> {
        check(dir.path(), settings.clone(), n).lines().filter(|l| l.contains(" check")).map(str::to_string).collect()
    };
    let three = lines(3);
    // The last peer leaves: the others' lines stay byte for byte, names included.
    assert_eq!(lines(2), three[..2]);
    assert!(three[2].trim_start().starts_with("server db2.lab.test "), "{three:?}");
}

#[test]
fn admin_paths_go_to_the_authoritative_node() {
    let dir = test_dir();
    let settings = json!({
        "upstreams": null, "health_path": "/", "acme_challenge_port": 8402,
        "admin_node": "app1.lab.test", "admin_paths": ["/admin", "/uploads"],
    });
    let apps = json!([
        { "host": "app1.lab.test.", "name": "app1.lab.test", "address": "198.18.0.10", "port": 443 },
        { "host": "app2.lab.test.", "name": "app2.lab.test", "address": "198.18.0.11", "port": 443 },
    ]);
    let node = |address: &str, authoritative| NodeData {
        private_address: Some(address.into()),
        authoritative: Some(authoritative),
        ..Default::default()
    };
    // Another node: the admin paths to app1's private port, health-checked, a clear 503.
    let other = check_with(dir.path(), settings.clone(), 1, false, node("198.18.0.11", false), apps.clone());
    assert!(
        other.contains("acl admin_path path_beg /admin /uploads") && other.contains("use_backend admin if admin_path")
    );
    assert!(other.contains("server admin 198.18.0.10:8444 check inter 2s fall 2 rise 1"), "{other}");
    assert!(other.contains("503: the admin node app1.lab.test is not available"), "{other}");
    assert!(!other.contains("frontend admin_private"));
    // The authoritative node: its own upstreams, and the private listener with only those paths.
    let admin = check_with(dir.path(), settings.clone(), 1, false, node("198.18.0.10", true), apps.clone());
    assert!(admin.contains("bind 198.18.0.10:8444") && admin.contains("deny_status 404 unless admin_path"), "{admin}");
    assert!(!admin.contains("backend admin\n") && !admin.contains("use_backend admin"), "{admin}");
    // The authoritative node not discovered (yet): a backend without a server, so a 503.
    let alone = check_with(dir.path(), settings, 1, false, node("198.18.0.11", false), json!([]));
    assert!(alone.contains("backend admin") && !alone.contains("server admin"), "{alone}");
}
