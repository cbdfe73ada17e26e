//! The command line against temporary root trees: dry runs that tell the truth, idempotence,
//! secrets that never leak, bad input that changes nothing, crash safety.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use states::engine::report::{RunReport, Status};

const BIN: &str = env!("CARGO_BIN_EXE_bootstrap");

fn run(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.arg("--root").arg(root).args(args).env_remove("BOOTSTRAP_LOG").env("NO_COLOR", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The run report printed by `--json`, as the library's own type.
fn report(o: &Output) -> RunReport {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not a run report ({e}): {}", text(o)))
}

/// Every path under `root` with its mode and content: to prove nothing changed.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let content = if m.is_file() { fs::read(&p).unwrap() } else { Vec::new() };
            out.insert(p.clone(), (m.mode(), content));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

fn roles_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, body) in files {
        let p = d.path().join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, body).unwrap();
    }
    d
}

/// A file-level role like the embedded ones (which also manage packages and services, and so
/// need a live system: those are proven in vm-tests).
const WEB_ROLE: &str = r#"
[settings.site_name]
default = "test fleet"

[[state]]
id = "etc-bootstrap"
type = "directory"
path = "/etc/bootstrap"
mode = "0700"

[[state]]
id = "motd"
type = "file"
path = "/etc/motd"
template = "motd.hbs"
mode = "0644"

[[state]]
id = "www-dir"
type = "directory"
path = "/var/www/bootstrap"
mode = "0755"

[[state]]
id = "landing-page"
type = "file"
path = "/var/www/bootstrap/index.html"
content = "<h1>hello</h1>\n"
requires = ["www-dir"]
"#;

fn web_roles() -> tempfile::TempDir {
    roles_dir(&[("web.toml", WEB_ROLE), ("templates/motd.hbs", "{{settings.site_name}}: {{facts.hostname}}\n")])
}

/// `run` with the test role directory.
fn run_web(root: &Path, roles: &tempfile::TempDir, args: &[&str]) -> Output {
    let mut all = vec!["--roles", roles.path().to_str().unwrap()];
    all.extend_from_slice(args);
    run(root, &all, &[])
}

#[test]
fn check_lists_exactly_the_drift_and_apply_converges() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let roles = web_roles();
    let run = |r: &Path, args: &[&str], _: &[(&str, &str)]| run_web(r, &roles, args);
    let first = run(r, &["--check", "--json", "web"], &[]);
    assert_eq!(code(&first), 2, "{}", text(&first));
    assert!(snapshot(r).is_empty(), "--check wrote something");

    let o = run(r, &["apply", "web"], &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = run(r, &["--check", "web"], &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));

    // Drift in three states; the others stay as they are.
    fs::write(r.join("etc/motd"), "edited by hand\n").unwrap();
    fs::remove_file(r.join("var/www/bootstrap/index.html")).unwrap();
    fs::set_permissions(r.join("etc/bootstrap"), fs::Permissions::from_mode(0o755)).unwrap();
    let before = snapshot(r);
    let o = run(r, &["--check", "--json", "web"], &[]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    let r1 = report(&o);
    assert_eq!(r1.ids_with(Status::Pending), ["etc-bootstrap", "motd", "landing-page"]);
    let motd = &r1.states.iter().find(|s| s.id == "motd").unwrap().changes[0];
    assert!(motd.diff.as_deref().unwrap().contains("-edited by hand"), "{:?}", motd.diff);
    assert_eq!(snapshot(r), before, "--check changed the tree");

    // Human form: the same states, with diffs.
    let o = run(r, &["web", "--check"], &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("~ motd") && out.contains("-edited by hand") && out.contains("mode 0755 -> 0700"), "{out}");
    assert!(!out.contains("www-dir"), "a converged state was listed: {out}");

    let o = run(r, &["apply", "--json", "web"], &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(report(&o).ids_with(Status::Changed), ["etc-bootstrap", "motd", "landing-page"]);
    let o = run(r, &["--check", "web"], &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = run(r, &["apply", "--json", "web"], &[]);
    assert_eq!(report(&o).changed, 0, "second apply changed something: {}", text(&o));

    // The node's own files are states too: a secrets file others may read is drift, healed.
    let secrets = r.join("etc/bootstrap/secrets.toml");
    fs::write(&secrets, "# none\n").unwrap();
    fs::set_permissions(&secrets, fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(r, &["--check", "--json", "web"], &[]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    let own = report(&o);
    assert_eq!(own.ids_with(Status::Pending), ["bootstrap-files"]);
    let fix = &own.states.iter().find(|s| s.id == "bootstrap-files").unwrap().changes[0].summary;
    assert_eq!(fix, "/etc/bootstrap/secrets.toml: mode 0644 -> 0600");
    assert_eq!(fs::metadata(&secrets).unwrap().mode() & 0o777, 0o644, "--check changed it");
    let o = run(r, &["apply", "--json", "web"], &[]);
    assert_eq!(report(&o).ids_with(Status::Changed), ["bootstrap-files"]);
    assert_eq!(fs::metadata(&secrets).unwrap().mode() & 0o777, 0o600);
    assert_eq!(code(&run(r, &["--check", "web"], &[])), 0);
}

#[test]
fn recorded_roles_are_used_and_none_is_an_error() {
    let root = tempfile::tempdir().unwrap();
    let o = run(root.path(), &["--check"], &[]);
    assert_eq!(code(&o), 1);
    assert!(text(&o).contains("no roles given") && text(&o).contains("app, common, db"), "{}", text(&o));
    let o = run(root.path(), &["apply"], &[]);
    assert_eq!(code(&o), 1);
    assert!(text(&o).contains("no roles given"), "{}", text(&o));
    let o = run(root.path(), &[], &[]);
    assert_eq!(code(&o), 1);
    assert!(text(&o).contains("name the roles for this node"), "{}", text(&o));
    fs::create_dir_all(root.path().join("etc/bootstrap")).unwrap();
    fs::write(root.path().join("etc/bootstrap/node.toml"), "roles = [\"web\"]\n").unwrap();
    let roles = web_roles();
    let o = run_web(root.path(), &roles, &["apply", "--json"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(report(&o).states.iter().any(|s| s.id == "landing-page"));
    let o = run(root.path(), &["--check", "unknown-role"], &[]);
    assert!(text(&o).contains("unknown role `unknown-role`"), "{}", text(&o));
}

#[test]
fn a_name_that_is_no_role_stops_before_the_preflight() {
    // A root the preflight can't even measure: had it run first, its complaint would show.
    let missing = std::env::temp_dir().join("bootstrap-no-such-root-7f3a");
    let o = run(&missing, &["self-updat"], &[]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("`self-updat` is neither a role nor a command"), "{}", text(&o));
    assert!(!text(&o).contains("can't be bootstrapped"), "{}", text(&o));
    assert!(!missing.exists());
}

const SECRET_ROLE: &str = r#"
[[secret]]
name = "api_token"
prompt = "API token for the upstream"

[[state]]
id = "token-file"
type = "file"
path = "/etc/app/token.conf"
template = "token.conf.hbs"

[[state]]
id = "validated"
type = "file"
path = "/etc/app/validated.conf"
template = "token.conf.hbs"
validate = ["sh", "-c", "echo \"bad line: $(cat \"$1\")\" >&2; exit 1", "validator"]
"#;

#[test]
fn canary_secrets_never_appear_in_any_output() {
    let canary = "canary-Zq81-do-not-leak";
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let roles =
        roles_dir(&[("s.toml", SECRET_ROLE), ("templates/token.conf.hbs", "token = {{secret \"api_token\"}}\n")]);
    let env = [("BOOTSTRAP_SECRET_API_TOKEN", canary)];
    let rd = roles.path().to_str().unwrap();
    let mut outputs = Vec::new();
    outputs.push(run(r, &["--roles", rd, "--check", "s"], &env));
    outputs.push(run(r, &["--roles", rd, "--check", "--json", "s"], &env));
    let applied = run(r, &["--roles", rd, "apply", "s"], &env);
    assert_eq!(code(&applied), 1, "the validator must reject: {}", text(&applied));
    // The validator's output is not shown for a file holding a secret; which file, which tool.
    let rejected = "/etc/app/validated.conf rejected by `sh` (exit 1); its output is not shown";
    assert!(text(&applied).contains(rejected), "{}", text(&applied));
    assert!(!text(&applied).contains("bad line"), "{}", text(&applied));
    outputs.push(applied);
    fs::write(r.join("etc/app/token.conf"), format!("token = {canary}-old\n")).unwrap();
    outputs.push(run(r, &["--roles", rd, "--check", "s"], &env));
    outputs.push(run(r, &["--roles", rd, "apply", "--json", "-v", "s"], &env));
    for o in &outputs {
        assert!(!text(o).contains("canary-Zq81"), "leak:\n{}", text(o));
    }
    // The secret did reach its file, and that file is root-only.
    let f = r.join("etc/app/token.conf");
    assert_eq!(fs::read_to_string(&f).unwrap(), format!("token = {canary}\n"));
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
    // Its previous version (the hand-edited `-old` value) is not kept.
    assert!(!r.join("var/lib/bootstrap/backup/etc/app/token.conf").exists());
}

#[test]
fn secret_set_keeps_the_rotated_out_value_out_of_every_output() {
    let (old, new) = ("canary-Old7-rotated-out", "canary-New7-rotated-in");
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // `peek` comes first, and its validator prints the token file as it is then: the old value.
    let role = r#"
[[secret]]
name = "api_token"
prompt = "API token for the upstream"

[[state]]
id = "peek"
type = "file"
path = "/etc/app/peek.conf"
content = "peek\n"
validate = ["sh", "-c", "f=\"$(dirname \"$1\")/token.conf\"; [ -e \"$f\" ] || exit 0; echo \"bad: $(cat \"$f\")\" >&2; exit 1", "validator"]

[[state]]
id = "token-file"
type = "file"
path = "/etc/app/token.conf"
template = "token.conf.hbs"
"#;
    let roles = roles_dir(&[("s.toml", role), ("templates/token.conf.hbs", "token = {{secret \"api_token\"}}\n")]);
    let o = run(r, &["--roles", roles.path().to_str().unwrap(), "s"], &[("BOOTSTRAP_SECRET_API_TOKEN", old)]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    fs::write(r.join("etc/app/peek.conf"), "drift\n").unwrap();

    let o = run(r, &["secret", "set", "api_token"], &[("BOOTSTRAP_SECRET_API_TOKEN", new)]);
    assert_eq!(code(&o), 1, "the validator must reject: {}", text(&o));
    assert!(text(&o).contains("bad: token = <redacted>"), "{}", text(&o));
    assert!(!text(&o).contains("canary-Old7"), "the rotated-out value leaked:\n{}", text(&o));
    let report = fs::read_to_string(r.join("var/lib/bootstrap/last-run.json")).unwrap();
    assert!(report.contains("bad: token = <redacted>") && !report.contains("canary-Old7"), "{report}");
    assert_eq!(fs::read_to_string(r.join("etc/app/token.conf")).unwrap(), format!("token = {new}\n"));
}

#[test]
fn a_missing_secret_stops_before_anything_changes() {
    let root = tempfile::tempdir().unwrap();
    let roles = roles_dir(&[("s.toml", SECRET_ROLE), ("templates/token.conf.hbs", "{{secret \"api_token\"}}\n")]);
    let o = run(root.path(), &["--roles", roles.path().to_str().unwrap(), "apply", "s"], &[]);
    assert_eq!(code(&o), 1);
    assert!(
        text(&o).contains("missing secrets: `api_token`") && text(&o).contains("BOOTSTRAP_SECRET_API_TOKEN"),
        "{}",
        text(&o)
    );
    // Said once: the log line for the journal is not printed beside the error.
    assert_eq!(text(&o).matches("missing secrets: `api_token`").count(), 1, "{}", text(&o));
    assert!(snapshot(root.path()).is_empty());
}

#[test]
fn a_roles_directory_others_can_write_is_refused_before_anything_changes() {
    let root = tempfile::tempdir().unwrap();
    let roles =
        roles_dir(&[("s.toml", "[[state]]\nid = \"f\"\ntype = \"file\"\npath = \"/etc/app/f\"\ncontent = \"x\"\n")]);
    let role_file = roles.path().join("s.toml");
    fs::set_permissions(&role_file, fs::Permissions::from_mode(0o666)).unwrap();
    let o = run(root.path(), &["--roles", roles.path().to_str().unwrap(), "apply", "s"], &[]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("s.toml is writable by every user"), "{}", text(&o));
    assert!(snapshot(root.path()).is_empty());
    fs::set_permissions(&role_file, fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(root.path(), &["--roles", roles.path().to_str().unwrap(), "apply", "s"], &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));
}

#[test]
fn a_dry_run_without_a_secret_plans_the_rest_and_shows_what_needs_it_as_pending() {
    let root = tempfile::tempdir().unwrap();
    let role = format!(
        "{SECRET_ROLE}\n[[state]]\nid = \"plain\"\ntype = \"file\"\npath = \"/etc/app/plain.conf\"\ncontent = \"x\"\n"
    );
    let roles = roles_dir(&[("s.toml", &role), ("templates/token.conf.hbs", "{{secret \"api_token\"}}\n")]);
    let o = run(root.path(), &["--roles", roles.path().to_str().unwrap(), "--check", "--json", "s"], &[]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    let r = report(&o);
    assert_eq!(r.ids_with(Status::Pending), ["token-file", "validated", "plain"]);
    let token = r.states.iter().find(|s| s.id == "token-file").unwrap();
    assert!(token.changes[0].summary.contains("needs secret `api_token`"), "{:?}", token.changes);
    assert!(text(&o).contains("dry run without secret `api_token`"), "{}", text(&o));
    assert!(snapshot(root.path()).is_empty(), "a dry run wrote something");
}

#[test]
fn bad_input_is_named_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let web = web_roles();
    assert_eq!(code(&run_web(r, &web, &["apply", "web"])), 0);
    fs::write(r.join("etc/motd"), "drifted\n").unwrap();
    let before = snapshot(r);
    let file = "[[state]]\nid = \"f\"\ntype = \"file\"\npath = \"/etc/f\"\n";
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (vec![("x.toml", "includes = [\"app\"\n".into())], "x.toml: TOML parse error at line 1"),
        (vec![("x.toml", "[[state]]\nid = \"a\"\ntype = \"pakage\"\n".into())], "unknown state type `pakage`"),
        (vec![("x.toml", format!("{file}content = \"\"\nrequires = [\"ghost\"]\n"))], "`f` requires `ghost`"),
        (
            vec![("x.toml", format!("{file}content = \"\"\nrequires = [\"g\"]\n[[state]]\nid = \"g\"\ntype = \"directory\"\npath = \"/g\"\nrequires = [\"f\"]\n"))],
            "cycle: f -> g -> f",
        ),
        (
            vec![("x.toml", format!("{file}template = \"t.hbs\"\n")), ("templates/t.hbs", "ok\n{{settings.nope}}\n".into())],
            "line 2",
        ),
    ];
    for (files, want) in cases {
        let mut files: Vec<(&str, &str)> = files.iter().map(|(n, b)| (*n, b.as_str())).collect();
        // The bad role runs with a valid one whose drift must stay untouched.
        files.push(("web.toml", WEB_ROLE));
        files.push(("templates/motd.hbs", "{{settings.site_name}}: {{facts.hostname}}\n"));
        let roles = roles_dir(&files);
        let o = run(r, &["--roles", roles.path().to_str().unwrap(), "apply", "web", "x"], &[]);
        assert_eq!(code(&o), 1, "{want}: {}", text(&o));
        assert!(text(&o).contains(want), "expected `{want}` in: {}", text(&o));
        assert_eq!(snapshot(r), before, "{want}: the tree changed");
    }
    // A malformed site file.
    let site = r.join("../bad-site.toml");
    fs::write(&site, "site_name = \n").unwrap();
    let o = run_web(r, &web, &["--site", site.to_str().unwrap(), "apply", "web"]);
    assert_eq!(code(&o), 1);
    assert!(text(&o).contains("bad-site.toml") && text(&o).contains("line 1"), "{}", text(&o));
    assert_eq!(snapshot(r), before);
    // Settings that are unknown or of the wrong type.
    for (body, want) in [
        ("site_nmae = \"x\"\n", "unknown setting `site_nmae`"),
        ("site_name = 3\n", "setting `site_name`: must be a string"),
    ] {
        fs::write(&site, body).unwrap();
        let o = run_web(r, &web, &["--site", site.to_str().unwrap(), "apply", "web"]);
        assert_eq!(code(&o), 1);
        assert!(text(&o).contains(want), "expected `{want}`: {}", text(&o));
        assert_eq!(snapshot(r), before);
    }
    let _ = fs::remove_file(site);
}

#[test]
fn a_run_killed_before_the_rename_leaves_the_old_file() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    fs::create_dir_all(r.join("etc")).unwrap();
    let old = "old complete content\n".repeat(100);
    fs::write(r.join("etc/big.conf"), &old).unwrap();
    let new = "new complete content\n".repeat(5000);
    // The validator stalls with the new content fully written to the temp file.
    let role = format!(
        "[[state]]\nid = \"big\"\ntype = \"file\"\npath = \"/etc/big.conf\"\ncontent = \"\"\"\n{new}\"\"\"\nvalidate = [\"sh\", \"-c\", \"sleep 3\", \"validator\"]\n"
    );
    let roles = roles_dir(&[("k.toml", &role)]);
    let rd = roles.path().to_str().unwrap();
    let mut child = Command::new(BIN)
        .args(["--root", r.to_str().unwrap(), "--roles", rd, "apply", "k"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let tmp = loop {
        let found = fs::read_dir(r.join("etc")).unwrap().flatten().find(|e| {
            e.file_name().to_string_lossy().contains(".bootstrap-tmp-")
                && e.metadata().map(|m| m.len() as usize == new.len()).unwrap_or(false)
        });
        if let Some(e) = found {
            break e.path();
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "the temp file never appeared");
        std::thread::sleep(Duration::from_millis(5));
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    assert_eq!(fs::read_to_string(r.join("etc/big.conf")).unwrap(), old, "target is not the old file");
    assert!(tmp.exists(), "the killed run's temp file is expected to remain");

    // The next run (with a validator that passes) writes the new file and sweeps the leftover.
    let role = role.replace("\"sleep 3\"", "\"true\"");
    let roles = roles_dir(&[("k.toml", &role)]);
    let o = run(r, &["--roles", roles.path().to_str().unwrap(), "apply", "k"], &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(fs::read_to_string(r.join("etc/big.conf")).unwrap(), new);
    assert!(!tmp.exists(), "stale temp file not swept");
}

#[test]
fn a_second_run_exits_75_while_the_lock_is_held() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    fs::create_dir_all(r.join("run")).unwrap();
    let held = fs::File::create(r.join("run/bootstrap.lock")).unwrap();
    let held = nix::fcntl::Flock::lock(held, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let web = web_roles();
    let o = run_web(r, &web, &["apply", "web"]);
    assert_eq!(code(&o), 75, "{}", text(&o));
    assert_eq!(code(&run_web(r, &web, &["--check", "web"])), 75);
    assert!(!r.join("etc").exists(), "a run without the lock changed something");
    drop(held);
    // The lock file itself left behind (as after a killed run) does not block.
    assert_eq!(code(&run_web(r, &web, &["apply", "web"])), 0);
}

fn serve_once(body: &'static str) -> (String, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/site.toml", listener.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 2048];
        let _ = s.read(&mut buf);
        let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        s.write_all(resp.as_bytes()).unwrap();
    });
    (url, h)
}

#[test]
fn first_install_records_the_node_and_later_runs_use_it() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let roles = roles_dir(&[
        ("web.toml", &format!("{WEB_ROLE}\n[[secret]]\nname = \"api_token\"\nprompt = \"API token\"\n\n[[secret]]\nname = \"cookie_key\"\nprompt = \"Cookie key\"\ngenerate = true\n")),
        ("templates/motd.hbs", "{{settings.site_name}}: {{facts.hostname}}\n"),
    ]);
    let body = "site_name = \"from the web\"\n";
    let sum = states::engine::content::sha256_hex(body.as_bytes());

    // A pinned site URL whose content does not match: refused, nothing written.
    let (url, h) = serve_once(body);
    let rd = roles.path().to_str().unwrap();
    let env = [("BOOTSTRAP_SECRET_API_TOKEN", "canary-install-token")];
    let o = run(r, &["--roles", rd, "--site", &url, "--site-sha256", &"0".repeat(64), "web"], &env);
    h.join().unwrap();
    assert_eq!(code(&o), 1);
    assert!(text(&o).contains("not the pinned"), "{}", text(&o));
    assert!(snapshot(r).is_empty());

    let (url, h) = serve_once(body);
    let o = run(r, &["--roles", rd, "--site", &url, "--site-sha256", &sum, "web"], &env);
    h.join().unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(!text(&o).contains("canary-install-token"));
    let mode = |p: &str| fs::metadata(r.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("usr/local/sbin/bootstrap"), 0o755);
    assert_eq!(fs::read(r.join("usr/local/sbin/bootstrap")).unwrap(), fs::read(BIN).unwrap());
    assert_eq!(mode("etc/bootstrap"), 0o700);
    assert_eq!(mode("etc/bootstrap/secrets.toml"), 0o600);
    let secrets = fs::read_to_string(r.join("etc/bootstrap/secrets.toml")).unwrap();
    assert!(secrets.contains("canary-install-token") && secrets.contains("cookie_key"), "generated secret not stored");
    assert!(fs::read_to_string(r.join("etc/bootstrap/site.toml")).unwrap().contains("from the web"));
    assert!(fs::read_to_string(r.join("etc/motd")).unwrap().starts_with("from the web: "));
    let node = fs::read_to_string(r.join("etc/bootstrap/node.toml")).unwrap();
    assert!(node.contains("roles = [\"web\"]") && node.contains(rd), "{node}");

    // Later runs: no roles, no --roles, no secret in the environment: all recorded.
    let o = run(r, &["apply", "--json"], &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(report(&o).changed, 0, "{}", text(&o));
    let report = fs::read_to_string(r.join("var/lib/bootstrap/last-run.json")).unwrap();
    assert!(!report.contains("canary-install-token"));
    assert_eq!(code(&run(r, &["--check"], &[])), 0);
    let status = run(r, &["status"], &[]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("roles:    web"), "{}", text(&status));

    // Rotating a secret the roles do not declare is refused.
    let o = run(r, &["secret", "set", "nope"], &[("BOOTSTRAP_SECRET_NOPE", "whatever-long")]);
    assert_eq!(code(&o), 1);
    assert!(text(&o).contains("declare no secret `nope`") && text(&o).contains("api_token"), "{}", text(&o));
}

#[test]
fn commands_that_only_act_refuse_check() {
    let root = tempfile::tempdir().unwrap();
    for args in [&["--check", "secret", "set", "x"][..], &["--check", "status"]] {
        let o = run(root.path(), args, &[]);
        assert_eq!(code(&o), 1, "{args:?}: {}", text(&o));
        assert!(text(&o).contains("--check is for converging"), "{args:?}: {}", text(&o));
    }
    assert!(snapshot(root.path()).is_empty());
}
