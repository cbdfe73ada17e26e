//! First install on fresh nodes, as an operator does it: wget, `./bootstrap app` through a real
//! terminal (prompts, no echo, a mismatched confirmation asked again), or without one from
//! systemd credentials and environment variables. Then: files and modes, the schedule really
//! run by cron, `status`, rotation, reports, and canary secrets found nowhere.

use std::path::Path;
use std::time::Duration;

use vm_tests::canary;
use vm_tests::operator::{bootstrap, download, serve_binary, DOWNLOADED};
use vm_tests::report::{self, ChangeKind};
use vm_tests::{Lab, Node, RunOpts};

const CANARY: &str = "canary-7Hq2-api-token";

/// The embedded roles plus what the test needs: a required setting, a secret typed by the
/// operator and one generated, and a file that uses them.
fn put_test_roles(node: &Node) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../roles");
    for entry in walk(&repo) {
        let rel = entry.strip_prefix(&repo).unwrap().to_str().unwrap().to_string();
        let mut body = std::fs::read_to_string(&entry).unwrap();
        if rel == "app.toml" {
            body += r#"
[settings.contact_email]
type = "email"
required = true
prompt = "Contact e-mail for this node"

[[secret]]
name = "api_token"
prompt = "API token"
min_length = 12

[[secret]]
name = "session_key"
prompt = "Session key"
generate = true

[[state]]
id = "app-secrets"
type = "file"
path = "/etc/app/secrets.conf"
template = "app-secrets.hbs"
"#;
        }
        node.put_file(&format!("/root/roles/{rel}"), body.as_bytes(), 0o644);
    }
    node.put_file(
        "/root/roles/templates/app-secrets.hbs",
        b"contact={{settings.contact_email}}\ntoken={{secret \"api_token\"}}\nsession={{secret \"session_key\"}}\n",
        0o644,
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

fn stat(node: &Node, path: &str) -> String {
    node.run(&["stat", "-c", "%a %U", path]).assert_ok("stat").stdout.trim().to_string()
}

/// Every world-readable regular file outside /proc and /sys that contains `needle`.
fn world_readable_with(node: &Node, needle: &str) -> String {
    node.sh(&format!(
        "find / -xdev \\( -path /proc -o -path /sys -o -path /srv/repo \\) -prune -o -type f -perm -0004 -print0 | xargs -0 grep -l -F -- '{needle}' 2>/dev/null; true"
    ))
    .stdout
}

#[test]
fn terminal_install_prompts_schedules_and_never_leaks() {
    let lab = Lab::new("first_install_tty");
    let http = lab.http_server(0);
    serve_binary(&http);
    let node = lab.boot("app1");
    download(&node, &http);
    put_test_roles(&node);
    node.put_file("/root/site.toml", b"schedule_minutes = 1\n", 0o644);

    // Sample every process's command line while the install runs.
    node.exec(&[
        "systemd-run", "--unit=cmdline-sampler", "--collect", "sh", "-c",
        "while [ ! -e /tmp/stop-sampler ]; do for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done; done > /tmp/cmdlines 2>/dev/null",
    ])
    .assert_ok("start sampler");

    let mut pty = node.pty(&[DOWNLOADED, "--roles", "/root/roles", "--site", "/root/site.toml", "app"]);
    pty.expect("Contact e-mail for this node (contact_email): ");
    pty.send_line("not-an-email");
    pty.expect("is not an e-mail address");
    pty.expect("Contact e-mail for this node (contact_email): ");
    pty.send_line("ops@example.test");
    pty.expect("API token (api_token): ");
    pty.send_line(CANARY);
    pty.expect("api_token again: ");
    pty.send_line("something-else-entirely");
    pty.expect("did not match");
    pty.expect("API token (api_token): ");
    pty.send_line("short");
    pty.expect("shorter than 12 characters");
    pty.expect("API token (api_token): ");
    pty.send_line(CANARY);
    pty.expect("api_token again: ");
    pty.send_line(CANARY);
    pty.expect("Session key (session_key, Enter to generate one): ");
    pty.send_line("");
    pty.expect("generated a random value for session_key");
    let (code, rest) = pty.wait();
    assert_eq!(code, 0, "install failed:\n{rest}");
    assert!(!rest.contains(CANARY), "the terminal showed the secret (echo on?):\n{rest}");
    assert!(rest.contains("apply:"), "{rest}");

    node.run(&["touch", "/tmp/stop-sampler"]).assert_ok("stop sampler");
    std::thread::sleep(Duration::from_millis(500));
    let cmdlines = node.read_file("/tmp/cmdlines");
    assert!(cmdlines.contains("bootstrap"), "the sampler saw no run");
    assert!(!cmdlines.contains(CANARY), "a command line carried the secret");

    // What the install left: binary, settings, secrets (root-only), roles, schedule.
    assert_eq!(stat(&node, "/usr/local/sbin/bootstrap"), "755 root");
    assert_eq!(stat(&node, "/etc/bootstrap"), "700 root");
    assert_eq!(stat(&node, "/etc/bootstrap/secrets.toml"), "600 root");
    assert!(node.read_file("/etc/bootstrap/secrets.toml").contains(CANARY));
    let site = node.read_file("/etc/bootstrap/site.toml");
    assert!(site.contains("contact_email = \"ops@example.test\"") && site.contains("schedule_minutes = 1"), "{site}");
    let recorded = node.read_file("/etc/bootstrap/node.toml");
    assert!(recorded.contains("roles = [\"app\"]") && recorded.contains("/root/roles"), "{recorded}");
    let cron = node.read_file("/etc/cron.d/bootstrap");
    assert!(cron.contains("* * * * * root /usr/local/sbin/bootstrap apply"), "{cron}");
    assert_eq!(stat(&node, "/etc/app/secrets.conf"), "600 root");

    // cron really runs `bootstrap apply`: a run appears in the journal, logged by the binary.
    let runs = |n: &Node| n.journal(&["-t", "bootstrap"]).matches("run finished").count();
    let before = runs(&node);
    let t0 = std::time::Instant::now();
    while runs(&node) <= before {
        assert!(
            t0.elapsed() < Duration::from_secs(130),
            "no scheduled run within 2 minutes:\n{}",
            node.journal(&["-u", "cron"])
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(node.journal(&["-u", "cron"]).contains("/usr/local/sbin/bootstrap apply"));

    // A later run never prompts (no terminal here) and changes nothing.
    let again = report::apply(&node);
    assert_eq!(again.changed, 0, "{again:?}");
    let check = node.run(&["/usr/local/sbin/bootstrap", "--check"]);
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);

    // Reports: drift is told from intended change; the node exporter file appears.
    node.sh("mkdir -p /var/lib/prometheus/node-exporter && echo edited >> /etc/motd").assert_ok("drift");
    let healed = report::parse(&node.run(report::APPLY));
    let motd = report::state(&healed, "motd");
    assert_eq!(motd.change, Some(ChangeKind::Drift), "{motd:?}");
    let prom = node.read_file("/var/lib/prometheus/node-exporter/bootstrap.prom");
    assert!(
        prom.contains("bootstrap_last_run_success 1") && prom.contains("bootstrap_last_run_drift_corrected 1"),
        "{prom}"
    );
    assert_eq!(stat(&node, "/var/lib/bootstrap/last-run.json"), "600 root");

    let status = node.run(&["/usr/local/sbin/bootstrap", "status"]).assert_ok("status").stdout;
    assert!(status.contains("roles:    app"), "{status}");
    assert!(status.contains("last run:") && status.contains("1 drift corrected"), "{status}");
    assert!(status.contains("next run") && status.contains("pending:  none"), "{status}");

    // Rotation: the new value reaches the file that uses it, and is shown nowhere.
    let rotated = "canary-7Hq2-rotated-token";
    let r = node.run_opts(
        &["/usr/local/sbin/bootstrap", "secret", "set", "api_token"],
        &RunOpts::default().env("BOOTSTRAP_SECRET_API_TOKEN", rotated),
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(node.read_file("/etc/app/secrets.conf").contains(rotated));
    assert!(!format!("{}{}", r.stdout, r.stderr).contains("canary-7Hq2"), "rotation output leaked");

    // The canaries are nowhere else: journal (every field), reports, --check, readable files.
    let journal = node.exec(&["journalctl", "--no-pager", "-o", "verbose"]).stdout;
    // systemd logs the unit that ran `secret set` with its --setenv; the binary's own entries
    // must not carry it.
    let ours = node.exec(&["journalctl", "--no-pager", "-o", "verbose", "-t", "bootstrap"]).stdout;
    assert!(!ours.contains("canary-7Hq2"), "the binary logged a secret");
    assert!(!journal.contains(CANARY), "the journal holds the typed secret");
    assert!(!node.read_file("/var/lib/bootstrap/last-run.json").contains("canary-7Hq2"));
    let check = node.run(&["/usr/local/sbin/bootstrap", "--check", "-v"]);
    assert!(!format!("{}{}", check.stdout, check.stderr).contains("canary-7Hq2"));
    assert_eq!(world_readable_with(&node, "canary-7Hq2"), "", "world-readable files hold a secret");
    // Nor encoded, the typed value and the rotated-out one.
    let report = node.read_file("/var/lib/bootstrap/last-run.json");
    let shown = format!("{}{}{}{}", r.stdout, r.stderr, check.stdout, check.stderr);
    for secret in [CANARY, rotated] {
        canary::assert_absent(
            secret,
            &[("bootstrap's journal entries", &ours), ("last-run.json", &report), ("output", &shown)],
        );
    }
    canary::assert_absent(CANARY, &[("the journal", &journal)]);
}

#[test]
fn install_without_terminal_from_credentials_and_environment() {
    let lab = Lab::new("first_install_notty");
    let http = lab.http_server(0);
    serve_binary(&http);
    let creds = lab.node("cred1").credential("api_token", CANARY).boot();
    let envs = lab.boot("env1");
    for node in [&creds, &envs] {
        download(node, &http);
        put_test_roles(node);
        node.put_file("/root/site.toml", b"contact_email = \"ops@example.test\"\n", 0o644);
    }
    let args = [DOWNLOADED, "--roles", "/root/roles", "--site", "/root/site.toml", "app"];

    // A secret missing and no terminal: nothing changes, and the message names it.
    let missing = envs.run(&args);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("missing secrets: `api_token`")
            && missing.stderr.contains("BOOTSTRAP_SECRET_API_TOKEN"),
        "{}",
        missing.stderr
    );
    for p in ["/etc/bootstrap", "/usr/local/sbin/bootstrap", "/etc/app", "/etc/cron.d/bootstrap"] {
        assert!(!envs.exists(p), "{p} exists after a refused install");
    }

    // systemd credentials: LoadCredential without a path takes the one passed to the machine.
    let mut with_creds =
        vec!["systemd-run", "--wait", "--pipe", "--quiet", "--collect", "-p", "LoadCredential=api_token", "--"];
    with_creds.extend_from_slice(&args);
    let r = creds.exec(&with_creds);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(!format!("{}{}", r.stdout, r.stderr).contains(CANARY));

    // Environment variables.
    let r = envs.run_opts(&args, &RunOpts::default().env("BOOTSTRAP_SECRET_API_TOKEN", CANARY));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);

    for node in [&creds, &envs] {
        assert_eq!(stat(node, "/etc/bootstrap/secrets.toml"), "600 root");
        let secrets = node.read_file("/etc/bootstrap/secrets.toml");
        assert!(secrets.contains(CANARY) && secrets.contains("session_key"), "generated secret not stored");
        let conf = node.read_file("/etc/app/secrets.conf");
        assert!(conf.contains(CANARY), "{conf}");
        // Later runs need no secret source: they use the stored ones, and change nothing.
        let again = bootstrap(node, &["apply", "--json"]);
        assert_eq!(report::parse(&again).changed, 0, "{}{}", again.stdout, again.stderr);
        assert_eq!(bootstrap(node, &["--check"]).code, 0);
        assert_eq!(world_readable_with(node, CANARY), "");
    }
}
