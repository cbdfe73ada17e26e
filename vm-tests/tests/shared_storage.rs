//! Shared storage over SSHFS (issue 15), in fresh containers with knot: a storage node
//! (`bootstrap storage`) and two app nodes that mount its volumes. Proves: each client makes
//! its own key and publishes it in DNS, the storage node authorizes exactly the clients it
//! discovers (each only from its address) and publishes its host key, which the clients pin;
//! a file written on one app node is read on the other and on the storage node; no private key
//! is anywhere but on the node that made it. The storage account gets no shell, no forwarding
//! and no way out of its chroot; a node not in the zone is refused, and so is a client's own
//! key used from another address. The storage node rebooted: the mounts come back without a
//! run (measured); a mount whose daemon died is drift for `--check` and is mounted again by
//! the next run. A decommissioned client loses access at the storage node's next run. Every
//! node ends converged; the TSIG key and the private keys are in no output.

use std::time::{Duration, Instant};

use vm_tests::cmd::poll;
use vm_tests::operator::{download, serve_binary};
use vm_tests::report::{self, apply, check, state, Status};
use vm_tests::{timed, Lab, Node, RunOpts, RunResult, Zone};

const KEY: &str = "/etc/bootstrap/sshfs/id_ed25519";
const KNOWN: &str = "/etc/bootstrap/sshfs/known_hosts";
const AUTHORIZED: &str = "/etc/ssh/bootstrap-share/authorized_keys";

fn site(tsig_name: &str) -> String {
    format!(
        "dns_zone = \"lab.test\"\ndns_server = \"198.18.0.1:53\"\ntsig_key_name = \"{tsig_name}\"\n\
         private_cidr = \"198.18.0.0/24\"\nstorage_node = \"store.lab.test\"\n\
         shared_volumes = [\"uploads\", \"cache\"]\n"
    )
}

/// `ssh` (or `sftp`) from `node` as the storage account with `key`, pinned to the storage
/// node's published host key; `args` after the options.
fn ssh_as_share(node: &Node, program: &str, key: &str, store: &Node, args: &[&str], stdin: &str) -> RunResult {
    let target = format!("sftp-share@{}", store.addr());
    let mut argv = vec![
        program,
        "-i",
        key,
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "ConnectTimeout=5",
    ];
    argv.extend_from_slice(args);
    if program == "sftp" {
        argv.extend(["-b", "-", &target]);
    } else {
        argv.push(&target);
    }
    node.run_opts(&argv, &RunOpts::default().stdin(stdin).timeout(Duration::from_secs(30)))
}

/// Base64 of a node's private key material only, to search for: in OpenSSH's format an
/// unencrypted ed25519 key's 32-byte seed starts at byte 161 (after the header, the public
/// key, the check words, the key type and the public key again); characters 216..256 encode
/// bytes 162..192 of it. (The rest of the file is the same for every key, or public.)
fn key_secret_part(node: &Node) -> String {
    let body: String = node.read_file(KEY).lines().filter(|l| !l.starts_with("-----")).collect();
    body[216..256].to_string()
}

#[test]
fn app_nodes_share_volumes_of_the_storage_node_over_sshfs() {
    let lab = Lab::new("sshfs");
    let knot = lab.start_knot(&[Zone::new("lab.test")]);
    let key = knot.tsig_key().clone();
    let http = lab.http_server(0);
    serve_binary(&http);
    let store = lab.boot("store");
    let fuse = |name: &str| lab.node(name).nspawn_arg("--bind=/dev/fuse").boot();
    let (app1, app2) = (fuse("app1"), fuse("app2"));
    let intruder = lab.boot("intruder");
    let secrets = RunOpts::default()
        .env("BOOTSTRAP_SECRET_DNS_TSIG_KEY", &key.secret)
        .env("BOOTSTRAP_SECRET_DB_PASSWORD", "canary-db-Pw-0001")
        .timeout(Duration::from_secs(600));
    let install = |node: &Node, role: &str| {
        download(node, &http);
        node.put_file("/root/site.toml", site(&key.name).as_bytes(), 0o644);
        timed(&format!("./bootstrap {role} on {}", node.name()), || {
            node.run_opts(&["/root/bootstrap", "--json", "--site", "/root/site.toml", role], &secrets)
        })
    };
    let r = install(&store, "storage");
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let published = knot.query("_ssh-host-key.store.lab.test", "TXT");
    let host_key = store.read_file("/etc/ssh/ssh_host_ed25519_key.pub");
    let host_key_words: Vec<&str> = host_key.split_whitespace().take(2).collect();
    assert!(published.iter().any(|t| t.contains(host_key_words[1])), "host key not published: {published:?}");

    // The app nodes publish their keys; until the storage node has run since, it refuses them,
    // and the install says so on the mounts only.
    for app in [&app1, &app2] {
        let r = install(app, "app");
        let rep = report::parse(&r);
        let failed = rep.ids_with(Status::Failed);
        assert!(
            failed.iter().all(|id| id.starts_with("sshfs-mount.")),
            "{}: states failed other than the mounts: {failed:?}\n{}",
            app.name(),
            r.stderr
        );
        let why = state(&rep, "sshfs-mount.uploads").error.clone().unwrap_or_default();
        assert!(
            why.contains("mounting /srv/share/uploads failed: read: Connection reset by peer")
                && why.contains("authorized at that node's next run"),
            "{}: the mount's failure does not say why: {why}",
            app.name()
        );
        let mode = app.run(&["stat", "-c", "%a %U", KEY]).stdout;
        assert_eq!(mode.trim(), "600 root", "{}: private key mode", app.name());
        let pubkey = app.read_file(&format!("{KEY}.pub"));
        let txt = knot.query(&format!("_sshfs-client-key.{}.lab.test", app.name()), "TXT");
        let words: Vec<&str> = pubkey.split_whitespace().collect();
        assert!(txt.iter().any(|t| t.contains(words[1])), "{}: key not in DNS: {txt:?}", app.name());
        let known = app.read_file(KNOWN);
        assert!(known.contains(&format!("{} {} {}", store.addr(), host_key_words[0], host_key_words[1])), "{known}");
    }
    let srv = knot.query("_sshfs._tcp.lab.test", "SRV");
    assert_eq!(srv.len(), 2, "{srv:?}");

    // The storage node's next run authorizes exactly the two clients, each from its address;
    // theirs mounts every volume.
    apply(&store);
    let authorized = store.read_file(AUTHORIZED);
    for app in [&app1, &app2] {
        let words: Vec<String> =
            app.read_file(&format!("{KEY}.pub")).split_whitespace().take(2).map(String::from).collect();
        assert!(
            authorized.contains(&format!("restrict,from=\"{}\" {} {}", app.addr(), words[0], words[1])),
            "{}: not authorized from its address:\n{authorized}",
            app.name()
        );
    }
    assert_eq!(authorized.lines().filter(|l| l.starts_with("restrict")).count(), 2, "{authorized}");
    for app in [&app1, &app2] {
        apply(app);
        let mounts = app.run(&["findmnt", "-t", "fuse.sshfs", "-rn", "-o", "TARGET,SOURCE"]).stdout;
        for vol in ["uploads", "cache"] {
            assert!(mounts.contains(&format!("/srv/share/{vol} sftp-share@{}:/{vol}", store.addr())), "{mounts}");
        }
    }

    // A file written on app1 is read on app2 and on the storage node.
    app1.sh("echo written-on-app1 > /srv/share/uploads/hello.txt").assert_ok("write on app1");
    assert_eq!(app2.read_file("/srv/share/uploads/hello.txt").trim(), "written-on-app1");
    assert_eq!(store.read_file("/srv/share/uploads/hello.txt").trim(), "written-on-app1");
    app2.sh("mkdir -p /srv/share/cache/c && echo from-app2 > /srv/share/cache/c/x").assert_ok("write on app2");
    assert_eq!(app1.read_file("/srv/share/cache/c/x").trim(), "from-app2");

    // No private key anywhere but on the node that made it.
    let bodies = [(app1.name().to_string(), key_secret_part(&app1)), (app2.name().to_string(), key_secret_part(&app2))];
    for node in [&store, &app1, &app2, &intruder] {
        for (owner, body) in &bodies {
            if owner == node.name() {
                continue;
            }
            // The needle goes in a file under /run (not searched): on a command line it would be
            // in the journal, which is searched.
            node.put_file("/run/needle", body.as_bytes(), 0o600);
            let found =
                node.run(&["grep", "-rlF", "-f", "/run/needle", "/etc", "/root", "/var", "/srv", "/home", "/tmp"]);
            assert!(found.stdout.trim().is_empty(), "{owner}'s private key found on {}: {}", node.name(), found.stdout);
        }
    }

    // The storage account: no shell, no command, no forwarding, no way out of the chroot.
    let r = ssh_as_share(&app1, "ssh", KEY, &store, &["-tt"], "id\nexit\n");
    assert!(!r.stdout.contains("uid="), "a command ran: {}", r.stdout);
    let r = ssh_as_share(&app1, "ssh", KEY, &store, &[], "");
    assert!(!r.stdout.contains("uid="), "{}", r.stdout);
    let r = ssh_as_share(&app1, "ssh", KEY, &store, &["-T", "-o", "RequestTTY=no", "--", "/bin/sh", "-c", "id"], "");
    assert!(!r.stdout.contains("uid="), "a command ran: {}", r.stdout);
    let r = ssh_as_share(&app1, "ssh", KEY, &store, &["-W", "127.0.0.1:22"], "");
    assert!(r.code != 0 && r.stderr.contains("prohibited"), "forwarding was not refused: {} {}", r.code, r.stderr);
    let r = ssh_as_share(&app1, "sftp", KEY, &store, &[], "ls /\n");
    assert!(r.code == 0 && r.stdout.contains("uploads") && r.stdout.contains("cache"), "{}\n{}", r.stdout, r.stderr);
    for escape in ["ls /etc\n", "get /etc/passwd /tmp/passwd\n", "cd ..\nls ../etc\n", "get /../../etc/shadow /tmp/s\n"]
    {
        let r = ssh_as_share(&app1, "sftp", KEY, &store, &[], escape);
        assert!(r.code != 0, "{escape:?} left the chroot:\n{}\n{}", r.stdout, r.stderr);
    }
    assert!(!app1.exists("/tmp/passwd") && !app1.exists("/tmp/s"));

    // A node not in the zone, with its own key, is refused; so is app1's key from another address.
    intruder
        .sh("apt-get update -qq && apt-get install -y -qq openssh-client >/dev/null")
        .assert_ok("openssh-client on the intruder");
    intruder.run(&["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/root/own"]).assert_ok("keygen");
    let r = ssh_as_share(&intruder, "sftp", "/root/own", &store, &[], "ls /\n");
    assert!(r.code != 0 && r.stderr.contains("Permission denied"), "a stranger got in: {}\n{}", r.stdout, r.stderr);
    intruder.put_file("/root/stolen", app1.read_file(KEY).as_bytes(), 0o600);
    let r = ssh_as_share(&intruder, "sftp", "/root/stolen", &store, &[], "ls /\n");
    assert!(
        r.code != 0 && r.stderr.contains("Permission denied"),
        "a key worked from elsewhere: {}\n{}",
        r.stdout,
        r.stderr
    );
    intruder.run(&["rm", "-f", "/root/stolen"]).assert_ok("rm the copy");

    // The storage node rebooted: the mounts come back by themselves, without a run. A file
    // written there after the reboot is one no cache on app1 can answer for.
    let mut store = store;
    store.reboot();
    store.sh("echo after-reboot > /srv/share/uploads/after-reboot.txt").assert_ok("write on the storage node");
    let t = Instant::now();
    let back = poll(Duration::from_secs(180), || {
        let r = app1.run_opts(
            &["timeout", "5", "cat", "/srv/share/uploads/after-reboot.txt"],
            &RunOpts::default().timeout(Duration::from_secs(10)),
        );
        (r.code == 0 && r.stdout.trim() == "after-reboot").then_some(())
    });
    let secs = t.elapsed().as_secs_f64();
    eprintln!("[measure] sshfs mount on app1 answering again {secs:.1}s after the storage node was back up (no run)");
    assert!(back.is_some(), "app1's mount did not come back by itself within 180 s");

    // A mount whose daemon died: drift for --check, mounted again by the next run.
    let killed = app2.run(&["pkill", "-KILL", "-f", "^/sbin/mount.fuse.sshfs sftp-share@"]);
    assert!(killed.success(), "no sshfs on app2 to kill: {}", app2.run(&["ps", "-eo", "pid,comm,args"]).stdout);
    poll(Duration::from_secs(10), || (!app2.run(&["ls", "/srv/share/uploads"]).success()).then_some(()))
        .expect("the mount still answers after its daemon died");
    let (code, rep) = check(&app2);
    assert_eq!(code, 2, "--check did not see the dead mounts");
    for vol in ["uploads", "cache"] {
        let s = state(&rep, &format!("sshfs-mount.{vol}"));
        assert!(
            s.changes.iter().any(|c| c.summary.contains("it is dead") || c.summary.starts_with("mount (is")),
            "{vol}: {:?}",
            s.changes
        );
    }
    apply(&app2);
    assert_eq!(app2.read_file("/srv/share/uploads/hello.txt").trim(), "written-on-app1");

    // Converged: a second run changes nothing and --check exits 0, on every node.
    for node in [&store, &app1, &app2] {
        let t = Instant::now();
        let rep = apply(node);
        eprintln!(
            "[measure] no-op run on {}: {:.0} ms (with the shell around it)",
            node.name(),
            t.elapsed().as_secs_f64() * 1000.0
        );
        let changed = rep.ids_with(Status::Changed);
        assert!(changed.is_empty(), "{}: a second run changed {changed:?}", node.name());
        let (code, rep) = check(node);
        assert_eq!(code, 0, "{}: --check after converging: {:?}", node.name(), rep.ids_with(Status::Pending));
    }

    // The no-op run's cost with the mounts in it (a measure, printed; BENCHMARKS.md).
    vm_tests::measure::noop_run(&store, "storage node");
    vm_tests::measure::noop_run(&app1, "app node with two mounts");

    // Decommissioned, app2 leaves DNS; the storage node's next run drops its key.
    let r = app2.run(&["/usr/local/sbin/bootstrap", "decommission"]);
    assert_eq!(r.code, 0, "decommission:\n{}\n{}", r.stdout, r.stderr);
    assert!(knot.query("_sshfs-client-key.app2.lab.test", "TXT").is_empty());
    apply(&store);
    let authorized = store.read_file(AUTHORIZED);
    assert!(!authorized.contains(&format!("from=\"{}\"", app2.addr())), "app2 still authorized:\n{authorized}");
    assert!(authorized.contains(&format!("from=\"{}\"", app1.addr())), "app1 lost:\n{authorized}");
    // Its session ended with its key: its mount serves no more (app1's reconnects).
    let cut = poll(Duration::from_secs(60), || {
        let r = app2.run_opts(
            &["timeout", "5", "ls", "/srv/share/cache/c"],
            &RunOpts::default().timeout(Duration::from_secs(10)),
        );
        (!r.success()).then_some(())
    });
    assert!(cut.is_some(), "the decommissioned app2 still reads the share");
    assert_eq!(app1.read_file("/srv/share/cache/c/x").trim(), "from-app2", "app1 lost the share");
    let (code, _) = check(&store);
    assert_eq!(code, 0, "the storage node after the decommission");

    // Secrets: the TSIG key and the private keys in no journal.
    for node in [&store, &app1, &app2] {
        let journal = node.journal(&["-o", "cat"]);
        assert!(!journal.contains(&key.secret), "{}: the TSIG key is in the journal", node.name());
        for (_, body) in &bodies {
            assert!(!journal.contains(body.as_str()), "{}: a private key is in the journal", node.name());
        }
    }
}
