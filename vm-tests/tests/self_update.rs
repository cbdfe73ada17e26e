//! Signed self-update on a fresh node: the next release is installed (and the next run is made
//! by it), `--rollback` puts the previous one back, and every bad release is refused with the
//! installed binary intact and working: a corrupted binary, a truncated one, a manifest signed
//! by another key, a tampered manifest, a downgrade, and a release that fails its own check of
//! the node. Then the site's `bootstrap_version` moves the node up and back down as a state.
//! The fleet-wide pin through a signed bundle is in `site_bundle.rs`.

use vm_tests::operator::{download, serve_binary, INSTALLED};
use vm_tests::releases::{self, Releases};
use vm_tests::report::{apply, check};
use vm_tests::{Lab, Node};

fn version(node: &Node) -> String {
    node.run(&[INSTALLED, "--version"]).assert_ok("bootstrap --version").stdout.trim().to_string()
}

fn installed_sum(node: &Node) -> String {
    node.sh(&format!("sha256sum {INSTALLED} | cut -d' ' -f1")).assert_ok("sha256sum").stdout
}

/// `self-update ARGS` fails with `want` in its message, and the node keeps its binary, working.
fn refused(node: &Node, args: &[&str], want: &str, current: &str) {
    let before = installed_sum(node);
    let mut argv = vec![INSTALLED, "self-update"];
    argv.extend_from_slice(args);
    let r = node.run(&argv);
    let text = format!("{}{}", r.stdout, r.stderr);
    assert_eq!(r.code, 1, "self-update {args:?} was not refused: {text}");
    assert!(text.contains(want), "self-update {args:?}: want `{want}` in: {text}");
    assert_eq!(installed_sum(node), before, "self-update {args:?} changed the binary");
    assert_eq!(version(node), format!("bootstrap {current}"));
    let stray = node.sh("ls -a /usr/local/sbin | grep -c '^.bootstrap.new' || true").stdout;
    assert_eq!(stray.trim(), "0", "a staged binary was left behind");
    assert_eq!(check(node).0, 0, "the node is not converged after a refused update ({args:?})");
}

#[test]
fn a_node_updates_itself_only_to_good_signed_releases_and_rolls_back() {
    let rel = Releases::from_env();
    let (cur, next) = (rel.current.clone(), rel.next.clone());
    let lab = Lab::new("selfupd");
    let http = lab.http_server(0);
    serve_binary(&http);
    let base = rel.serve(&http);

    let node = lab.boot("n1");
    download(&node, &http);
    node.put_file("/root/site.toml", format!("release_url = \"{base}\"\n").as_bytes(), 0o644);
    node.run(&["/root/bootstrap", "--site", "/root/site.toml", "common"]).assert_ok("./bootstrap common");
    assert_eq!(version(&node), format!("bootstrap {cur}"));
    assert!(node.run(&[INSTALLED, "status"]).stdout.contains(&format!("binary:   bootstrap {cur}")));

    // Every bad release is refused; the installed binary stays, runs, and the node converges.
    let good = rel.binary(&next);
    let mut corrupt = good.clone();
    let at = corrupt.len() / 2;
    corrupt[at] ^= 0xff;
    rel.publish(&http, "9.0.1", &releases::manifest("9.0.1", &good), &corrupt, None);
    refused(&node, &["--to", "9.0.1"], "corrupted or tampered with", &cur);
    rel.publish(&http, "9.0.2", &releases::manifest("9.0.2", &good), &good[..good.len() / 3], None);
    refused(&node, &["--to", "9.0.2"], "a truncated download", &cur);
    let other = tempfile::tempdir().unwrap();
    let other_key = releases::other_key(other.path());
    rel.publish(&http, "9.0.3", &releases::manifest("9.0.3", &good), &good, Some(&other_key));
    refused(&node, &["--to", "9.0.3"], "signed with another key", &cur);
    rel.publish(&http, "9.0.4", &releases::manifest("9.0.4", &good), &good, None);
    http.put("releases/9.0.4/manifest.toml", releases::manifest("9.0.4", &good).replace("size = ", "size = 1"));
    refused(&node, &["--to", "9.0.4"], "does not match", &cur);
    let same = rel.binary(&cur);
    rel.publish(&http, "0.0.1", &releases::manifest("0.0.1", &same), &same, None);
    refused(&node, &["--to", "0.0.1"], "older than the installed", &cur);
    // Told to downgrade, the release still has to be what its manifest says.
    refused(&node, &["--to", "0.0.1", "--allow-downgrade"], "the new binary says it is", &cur);
    let broken =
        "#!/bin/sh\ncase \"$1\" in --version) echo 'bootstrap 9.0.5';; *) echo 'broken release' >&2; exit 1;; esac\n";
    rel.publish(&http, "9.0.5", &releases::manifest("9.0.5", broken.as_bytes()), broken.as_bytes(), None);
    refused(&node, &["--to", "9.0.5"], "`--check` of this node failed", &cur);
    http.remove("releases/9.0.6/manifest.toml");
    refused(&node, &["--to", "9.0.6"], "404", &cur);

    // The latest release: installed, and the next run is made by it.
    let r = node.run(&[INSTALLED, "self-update"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(version(&node), format!("bootstrap {next}"));
    let status = node.run(&[INSTALLED, "status"]).stdout;
    assert!(status.contains(&format!("bootstrap {next}; previous {cur} kept")), "{status}");
    node.run(&["sh", "-c", "grep -q '/usr/local/sbin/bootstrap apply' /etc/cron.d/bootstrap"])
        .assert_ok("cron runs the installed binary");
    assert_eq!(apply(&node).changed, 0, "the new binary changed a converged node");
    let again = node.run(&[INSTALLED, "self-update"]);
    assert!(again.code == 0 && again.stdout.contains("nothing to do"), "{}", again.stdout);

    // Rollback, and the rollback undone.
    node.run(&[INSTALLED, "self-update", "--rollback"]).assert_ok("--rollback");
    assert_eq!(version(&node), format!("bootstrap {cur}"));
    node.run(&[INSTALLED, "self-update", "--rollback"]).assert_ok("--rollback again");
    assert_eq!(version(&node), format!("bootstrap {next}"));
    node.run(&[INSTALLED, "self-update", "--rollback"]).assert_ok("--rollback to the current");

    // The site pins the version: --check shows it, a run carries it out, down again likewise.
    for (pin, verb) in [(&next, "update"), (&cur, "roll back")] {
        let from = version(&node);
        node.put_file(
            "/etc/bootstrap/site.toml",
            format!("release_url = \"{base}\"\nbootstrap_version = \"{pin}\"\n").as_bytes(),
            0o600,
        );
        let r = node.run(&[INSTALLED, "--check"]);
        assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains(&format!("{verb} {from} → {pin}")), "{}", r.stdout);
        assert_eq!(version(&node), from, "--check changed the binary");
        let rep = apply(&node);
        assert_eq!(rep.ids_with(vm_tests::report::Status::Changed), ["bootstrap-version"], "the pin is one change");
        assert_eq!(version(&node), format!("bootstrap {pin}"));
        assert_eq!(apply(&node).changed, 0, "a second run changes nothing");
        assert_eq!(check(&node).0, 0);
    }
}
