//! The command line against temporary root trees: dry runs that tell the truth, idempotence,
//! secrets that never leak, bad input that changes nothing, crash safety.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

/// Ids of the states a JSON report lists with `status`.
fn ids_with(report: &serde_json::Value, status: &str) -> Vec<String> {
    report["states"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == status)
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
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

#[test]
fn check_lists_exactly_the_drift_and_apply_converges() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let first = run(r, &["--check", "--json", "app"], &[]);
    assert_eq!(code(&first), 2, "{}", text(&first));
    assert!(snapshot(r).is_empty(), "--check wrote something");

    let o = run(r, &["apply", "app"], &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = run(r, &["--check", "app"], &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));

    // Drift in three states; the others stay as they are.
    fs::write(r.join("etc/motd"), "edited by hand\n").unwrap();
    fs::remove_file(r.join("var/www/bootstrap/index.html")).unwrap();
    fs::set_permissions(r.join("etc/bootstrap"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let before = snapshot(r);
    let o = run(r, &["--check", "--json", "app"], &[]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    let report = json(&o);
    assert_eq!(ids_with(&report, "pending"), ["etc-bootstrap", "motd", "landing-page"]);
    let motd = &report["states"].as_array().unwrap().iter().find(|s| s["id"] == "motd").unwrap()["changes"][0];
    assert!(motd["diff"].as_str().unwrap().contains("-edited by hand"), "{motd}");
    assert_eq!(snapshot(r), before, "--check changed the tree");

    // Human form: the same states, with diffs.
    let o = run(r, &["app", "--check"], &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("~ motd") && out.contains("-edited by hand") && out.contains("mode 0755 -> 0700"), "{out}");
    assert!(!out.contains("www-dir"), "a converged state was listed: {out}");

    let o = run(r, &["apply", "--json", "app"], &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(ids_with(&json(&o), "changed"), ["etc-bootstrap", "motd", "landing-page"]);
    let o = run(r, &["--check", "app"], &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = run(r, &["apply", "--json", "app"], &[]);
    assert_eq!(json(&o)["changed"], 0, "second apply changed something: {}", text(&o));
}

#[test]
fn recorded_roles_are_used_and_none_is_an_error() {
    let root = tempfile::tempdir().unwrap();
    let o = run(root.path(), &["--check"], &[]);
    assert_eq!(code(&o), 1);
    assert!(text(&o).contains("no roles given") && text(&o).contains("app, common, db"), "{}", text(&o));
    fs::create_dir_all(root.path().join("etc/bootstrap")).unwrap();
    fs::write(root.path().join("etc/bootstrap/node.toml"), "roles = [\"db\"]\n").unwrap();
    let o = run(root.path(), &["apply", "--json"], &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(json(&o)["states"].as_array().unwrap().iter().all(|s| s["id"] != "landing-page"));
    let o = run(root.path(), &["--check", "unknown-role"], &[]);
    assert!(text(&o).contains("unknown role `unknown-role`"), "{}", text(&o));
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
    let roles = roles_dir(&[("s.toml", SECRET_ROLE), ("templates/token.conf.hbs", "token = {{secret \"api_token\"}}\n")]);
    let env = [("BOOTSTRAP_SECRET_API_TOKEN", canary)];
    let rd = roles.path().to_str().unwrap();
    let mut outputs = Vec::new();
    outputs.push(run(r, &["--roles", rd, "--check", "s"], &env));
    outputs.push(run(r, &["--roles", rd, "--check", "--json", "s"], &env));
    let applied = run(r, &["--roles", rd, "apply", "s"], &env);
    assert_eq!(code(&applied), 1, "the validator must reject: {}", text(&applied));
    assert!(text(&applied).contains("bad line: token = <redacted>"), "{}", text(&applied));
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
    let backup = r.join("var/lib/bootstrap/backup/etc/app/token.conf");
    assert_eq!(fs::metadata(&backup).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn a_missing_secret_stops_before_anything_changes() {
    let root = tempfile::tempdir().unwrap();
    let roles = roles_dir(&[("s.toml", SECRET_ROLE), ("templates/token.conf.hbs", "{{secret \"api_token\"}}\n")]);
    let o = run(root.path(), &["--roles", roles.path().to_str().unwrap(), "apply", "s"], &[]);
    assert_eq!(code(&o), 1);
    assert!(text(&o).contains("missing secrets: `api_token`") && text(&o).contains("BOOTSTRAP_SECRET_API_TOKEN"), "{}", text(&o));
    assert!(snapshot(root.path()).is_empty());
}

#[test]
fn bad_input_is_named_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    assert_eq!(code(&run(r, &["apply", "app"], &[])), 0);
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
        // The bad role includes a valid one whose drift must stay untouched.
        let app = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../roles/app.toml")).unwrap();
        let common = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../roles/common.toml")).unwrap();
        files.push(("app.toml", &app));
        files.push(("common.toml", &common));
        let roles = roles_dir(&files);
        for t in ["motd.hbs", "landing.html.hbs"] {
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../roles/templates").join(t);
            fs::create_dir_all(roles.path().join("templates")).unwrap();
            fs::copy(src, roles.path().join("templates").join(t)).unwrap();
        }
        let o = run(r, &["--roles", roles.path().to_str().unwrap(), "apply", "app", "x"], &[]);
        assert_eq!(code(&o), 1, "{want}: {}", text(&o));
        assert!(text(&o).contains(want), "expected `{want}` in: {}", text(&o));
        assert_eq!(snapshot(r), before, "{want}: the tree changed");
    }
    // A malformed site file.
    let site = r.join("../bad-site.toml");
    fs::write(&site, "site_name = \n").unwrap();
    let o = run(r, &["--site", site.to_str().unwrap(), "apply", "app"], &[]);
    assert_eq!(code(&o), 1);
    assert!(text(&o).contains("bad-site.toml") && text(&o).contains("line 1"), "{}", text(&o));
    assert_eq!(snapshot(r), before);
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
        "[[state]]\nid = \"big\"\ntype = \"file\"\npath = \"/etc/big.conf\"\ncontent = \"\"\"\n{new}\"\"\"\nvalidate = [\"sleep\", \"3\"]\n"
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
    let role = role.replace("validate = [\"sleep\", \"3\"]", "validate = [\"true\"]");
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
    let o = run(r, &["apply", "app"], &[]);
    assert_eq!(code(&o), 75, "{}", text(&o));
    assert_eq!(code(&run(r, &["--check", "app"], &[])), 75);
    assert!(!r.join("etc").exists(), "a run without the lock changed something");
    drop(held);
    // The lock file itself left behind (as after a killed run) does not block.
    assert_eq!(code(&run(r, &["apply", "app"], &[])), 0);
}
