//! Signed site bundles end to end on a tree (`--root`), against a small HTTP server in the test
//! that honours `If-None-Match`: keygen, pack, install from a bundle, a new bundle applied by
//! the next run, an unchanged one answered 304, node-local settings over the bundle's, and
//! every bad bundle (tampered, older, another key, truncated, server down, server hanging)
//! refused with the node kept on its last good one and the failure reported.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use states::engine::report::RunReport;

const BIN: &str = env!("CARGO_BIN_EXE_bootstrap");

fn run(root: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("BOOTSTRAP_LOG")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn report(o: &Output) -> RunReport {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not a run report ({e}): {}", text(o)))
}

/// Files served by path; the requests seen, with whether they were conditional.
#[derive(Clone, Default)]
struct Server {
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    seen: Arc<Mutex<Vec<(String, bool)>>>,
}

impl Server {
    fn start() -> (Server, String) {
        let s = Server::default();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let me = s.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let me = me.clone();
                std::thread::spawn(move || me.answer(conn));
            }
        });
        (s, base)
    }

    fn put(&self, path: &str, bytes: Vec<u8>) {
        self.files.lock().unwrap().insert(path.into(), bytes);
    }

    fn answer(&self, mut conn: std::net::TcpStream) {
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let req = String::from_utf8_lossy(&req).to_string();
        let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
        let inm = req.lines().find_map(|l| l.strip_prefix("if-none-match: ").or(l.strip_prefix("If-None-Match: ")));
        self.seen.lock().unwrap().push((path.clone(), inm.is_some()));
        let body = self.files.lock().unwrap().get(&path).cloned();
        let resp = match body {
            None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
            Some(b) => {
                let etag = format!("\"{}\"", states::engine::content::sha256_hex(&b));
                if inm.map(str::trim) == Some(etag.as_str()) {
                    format!("HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n").into_bytes()
                } else {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nETag: {etag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        b.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&b);
                    r
                }
            }
        };
        let _ = conn.write_all(&resp);
    }
}

/// The operator's repository: a role of file states and its settings.
fn operator_dir(site_name: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("roles")).unwrap();
    fs::create_dir_all(d.path().join("templates")).unwrap();
    fs::write(d.path().join("site.toml"), format!("site_name = \"{site_name}\"\n")).unwrap();
    fs::write(
        d.path().join("roles/web.toml"),
        "[settings.site_name]\ndefault = \"x\"\n\n[[state]]\nid = \"name\"\ntype = \"file\"\npath = \"/etc/web/name\"\ntemplate = \"name.hbs\"\n",
    )
    .unwrap();
    fs::write(d.path().join("templates/name.hbs"), "{{settings.site_name}}\n").unwrap();
    d
}

/// A bundle and its signature.
type Signed = (Vec<u8>, Vec<u8>);

/// Pack `dir` with `key` at `serial`.
fn pack(dir: &Path, key: &Path, serial: u64) -> Signed {
    let out = dir.join("out.bundle");
    let o = Command::new(BIN)
        .args(["site", "pack"])
        .arg(dir)
        .arg("--key")
        .arg(key)
        .arg("-o")
        .arg(&out)
        .args(["--serial", &serial.to_string()])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o));
    (fs::read(&out).unwrap(), fs::read(format!("{}.minisig", out.display())).unwrap())
}

fn keygen(dir: &Path) -> (PathBuf, String) {
    let o = Command::new(BIN).args(["site", "keygen"]).arg(dir).output().unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o));
    let line = String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("install nodes with: --site-key ").map(str::to_string));
    assert!(
        fs::metadata(dir.join("site.key")).unwrap().permissions().mode() & 0o077 == 0,
        "the secret key is readable by others"
    );
    (dir.join("site.key"), line.expect("the public key is printed"))
}

use std::os::unix::fs::PermissionsExt;

#[test]
fn a_node_follows_its_signed_bundle_and_keeps_the_last_good_one() {
    let keys = tempfile::tempdir().unwrap();
    let (key, pubkey) = keygen(keys.path());
    let (server, base) = Server::start();
    let url = format!("{base}/site.bundle");
    let serve = |(b, s): (Vec<u8>, Vec<u8>)| {
        server.put("/site.bundle", b);
        server.put("/site.bundle.minisig", s);
    };
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let name = || fs::read_to_string(r.join("etc/web/name")).unwrap();

    // Install from the bundle: the bundle's role, template and settings; URL and key recorded.
    let v1 = operator_dir("one");
    serve(pack(v1.path(), &key, 10));
    let o = run(r, &["--site", &url, "--site-key", &pubkey, "web"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(name(), "one\n");
    let node = fs::read_to_string(r.join("etc/bootstrap/node.toml")).unwrap();
    assert!(node.contains(&url) && node.contains(&pubkey), "{node}");

    // Unchanged: the next run asks conditionally, gets 304, changes nothing.
    server.seen.lock().unwrap().clear();
    let o = run(r, &["apply", "--json"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(report(&o).changed, 0);
    assert_eq!(report(&o).site.unwrap().serial, Some(10));
    assert_eq!(*server.seen.lock().unwrap(), [("/site.bundle".to_string(), true)], "not one conditional request");

    // A new bundle: the next run converges to it.
    let v2 = operator_dir("two");
    let good = pack(v2.path(), &key, 20);
    serve(good.clone());
    let o = run(r, &["apply"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(name(), "two\n");
    assert!(String::from_utf8_lossy(&run(r, &["status"]).stdout).contains("bundle serial 20 from"));

    // A node-local setting overrides the bundle's.
    fs::write(r.join("etc/bootstrap/site.toml"), "site_name = \"local\"\n").unwrap();
    assert_eq!(code(&run(r, &["apply"])), 0);
    assert_eq!(name(), "local\n");
    fs::write(r.join("etc/bootstrap/site.toml"), "").unwrap();
    assert_eq!(code(&run(r, &["apply"])), 0);

    // A dry run of a newer bundle shows its change and keeps nothing of it.
    let v3 = operator_dir("three");
    serve(pack(v3.path(), &key, 30));
    let o = run(r, &["--check"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("+three"), "{}", text(&o));
    assert_eq!(name(), "two\n");
    serve(good.clone());

    // Every bad bundle: refused with a clear message, the node on its last good bundle.
    let other = tempfile::tempdir().unwrap();
    let (other_key, _) = keygen(other.path());
    let (b3, s3) = pack(v3.path(), &key, 30);
    let mut tampered = b3.clone();
    let at = tampered.len() / 3;
    tampered[at] ^= 0x20;
    let (old_b, old_s) = pack(v1.path(), &key, 10);
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/site.bundle", l.local_addr().unwrap())
    };
    let hang = TcpListener::bind("127.0.0.1:0").unwrap();
    let hanging = format!("http://{}/site.bundle", hang.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in hang.incoming().flatten() {
            held.push(c);
        }
    });
    // Signed by the right key, but the node's role can't compile from it: an unclosed block.
    let broken = operator_dir("broken");
    fs::write(broken.path().join("templates/name.hbs"), "{{#if settings.site_name}}open\n").unwrap();
    let cases: Vec<(&str, Option<Signed>, &str, &str)> = vec![
        ("roles that don't compile", Some(pack(broken.path(), &key, 50)), &url, "serial 50 is refused"),
        ("tampered", Some((tampered, s3.clone())), &url, "does not match"),
        ("older serial", Some((old_b, old_s)), &url, "older (or replayed) bundle is refused"),
        ("another key", Some(pack(v3.path(), &other_key, 40)), &url, "another key"),
        ("truncated", Some((b3[..b3.len() / 2].to_vec(), s3.clone())), &url, "does not match"),
        ("server down", None, &dead, "could not connect"),
        ("server hanging", None, &hanging, "timed out"),
    ];
    let node_toml = fs::read_to_string(r.join("etc/bootstrap/node.toml")).unwrap();
    for (what, files, at_url, want) in cases {
        if let Some(f) = files {
            serve(f);
        }
        fs::write(r.join("etc/bootstrap/node.toml"), node_toml.replace(&url, at_url)).unwrap();
        let o = run(r, &["apply", "--json"]);
        assert_eq!(code(&o), 1, "{what}: {}", text(&o));
        let rep = report(&o);
        let err = rep.site.as_ref().and_then(|s| s.error.clone()).unwrap_or_default();
        assert!(err.contains(want), "{what}: {err}");
        assert_eq!(rep.site.unwrap().serial, Some(20), "{what}");
        assert_eq!(name(), "two\n", "{what}: the node left its last good bundle");
        let status = run(r, &["status"]);
        assert_eq!(code(&status), 1, "{what}: status does not report the failure");
        assert!(String::from_utf8_lossy(&status.stdout).contains(want), "{what}");
        fs::write(r.join("etc/bootstrap/node.toml"), &node_toml).unwrap();
        serve(good.clone());
    }

    // Back to a good server: converged, nothing pending, status clean.
    let o = run(r, &["apply", "--json"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(report(&o).changed, 0);
    assert_eq!(code(&run(r, &["--check"])), 0);
    assert_eq!(code(&run(r, &["status"])), 0);
}

#[test]
fn unsigned_settings_from_a_server_need_a_pin_and_a_key_needs_a_url() {
    let root = tempfile::tempdir().unwrap();
    let o = run(root.path(), &["--site", "https://198.18.0.1/site.toml", "--check", "app"]);
    assert_eq!(code(&o), 1);
    assert!(text(&o).contains("need --site-sha256"), "{}", text(&o));
    let o =
        run(root.path(), &["--site-key", "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3", "--check", "web"]);
    assert_eq!(code(&o), 1);
    assert!(text(&o).contains("--site-key goes with `--site URL`"), "{}", text(&o));
}
