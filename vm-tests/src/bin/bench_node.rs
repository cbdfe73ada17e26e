//! The no-op benchmark on a real node (`bench/node`): a fresh container bootstrapped with each
//! embedded role, then converged runs timed inside it with hyperfine and their peak memory read
//! with GNU time. Prints figures; asserts nothing about them. With `BASELINE_BIN=PATH`, that
//! binary is timed beside the one under test on the same converged node, back to back, so a
//! comparison is not blurred by one machine's noise from one run to the next.

use vm_tests::operator::{bootstrap, download, serve_binary, INSTALLED};
use vm_tests::{report, Lab};

fn main() {
    let runs = std::env::var("RUNS").unwrap_or_else(|_| "30".into());
    let lab = Lab::new("bench_node");
    let http = lab.http_server(0);
    serve_binary(&http);
    println!("{:<22} {:<8} {:>12} {:>12} {:>12}", "role (on a node)", "mode", "mean ms", "min ms", "peak MiB");
    for (name, role) in [("bench-app", "app"), ("bench-db", "db")] {
        let node = lab.boot(name);
        download(&node, &http);
        let first = bootstrap(&node, &[role]);
        assert_eq!(first.code, 0, "install failed:\n{}{}", first.stdout, first.stderr);
        node.run(&["apt-get", "install", "-y", "-q", "hyperfine", "time"]).assert_ok("install hyperfine");
        if let Some(base) = std::env::var_os("BASELINE_BIN") {
            node.put_file("/root/baseline", &std::fs::read(base).unwrap(), 0o755);
            for args in ["apply", "--check"] {
                let (new, old) = (format!("{INSTALLED} {args}"), format!("/root/baseline {args}"));
                for _ in 0..3 {
                    let h = node
                        .run(&[
                            "hyperfine",
                            "-N",
                            "--warmup",
                            "3",
                            "--runs",
                            &runs,
                            "--export-json",
                            "/tmp/ab.json",
                            &old,
                            &new,
                        ])
                        .assert_ok("hyperfine a/b");
                    let _ = h;
                    let json: serde_json::Value = serde_json::from_str(&node.read_file("/tmp/ab.json")).unwrap();
                    let m = |i: usize, k: &str| json["results"][i][k].as_f64().unwrap() * 1e3;
                    println!(
                        "  a/b {role} {args}: baseline mean {:.2} min {:.2} ms; this build mean {:.2} min {:.2} ms",
                        m(0, "mean"),
                        m(0, "min"),
                        m(1, "mean"),
                        m(1, "min")
                    );
                }
            }
        }
        for (mode, args) in [("apply", "apply"), ("check", "--check")] {
            let cmd = format!("{INSTALLED} {args}");
            let h = node
                .run(&["hyperfine", "-N", "--warmup", "3", "--runs", &runs, "--export-json", "/tmp/h.json", &cmd])
                .assert_ok("hyperfine");
            let _ = h;
            let json: serde_json::Value = serde_json::from_str(&node.read_file("/tmp/h.json")).unwrap();
            let r = &json["results"][0];
            let mem = node.sh(&format!("/usr/bin/time -f %M {cmd} 2>&1 >/dev/null | tail -n 1")).stdout;
            let kib: f64 = mem.trim().parse().unwrap_or(f64::NAN);
            println!(
                "{:<22} {:<8} {:>12.2} {:>12.2} {:>12.2}",
                format!("{role} (embedded)"),
                mode,
                r["mean"].as_f64().unwrap() * 1e3,
                r["min"].as_f64().unwrap() * 1e3,
                kib / 1024.0
            );
        }
        let engine = report::parse(&node.run(report::APPLY));
        println!("  ({role}: {} states; engine time of one run {:.2} ms)", engine.states.len(), engine.duration_ms);
    }
    bundle(&lab, &http, &runs);
}

/// The app role on a node that follows a signed site bundle from the lab's HTTP server: an
/// unchanged bundle is one conditional request (304) per run. Timed back to back with the same
/// runs ignoring the bundle (`--site` of an empty local file), on the same node.
fn bundle(lab: &Lab, http: &vm_tests::HttpServer, runs: &str) {
    let keys = tempfile::tempdir().unwrap();
    let bin = vm_tests::bootstrap_bin();
    let run = |args: &[&str]| {
        let o = std::process::Command::new(&bin).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    run(&["site", "keygen", keys.path().to_str().unwrap()]);
    let repo = keys.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("site.toml"), "site_name = \"bench\"\n").unwrap();
    let out = keys.path().join("site.bundle");
    let key = keys.path().join("site.key");
    run(&["site", "pack", repo.to_str().unwrap(), "--key", key.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    http.put("site.bundle", std::fs::read(&out).unwrap());
    http.put("site.bundle.minisig", std::fs::read(keys.path().join("site.bundle.minisig")).unwrap());
    let pubkey = std::fs::read_to_string(keys.path().join("site.pub")).unwrap().lines().nth(1).unwrap().to_string();
    let node = lab.boot("bench-bundle");
    download(&node, http);
    let first = bootstrap(&node, &["--site", &http.url("site.bundle"), "--site-key", &pubkey, "app"]);
    assert_eq!(first.code, 0, "install failed:\n{}{}", first.stdout, first.stderr);
    node.run(&["apt-get", "install", "-y", "-q", "hyperfine"]).assert_ok("install hyperfine");
    // The same settings, given locally: the node as it runs without a bundle.
    node.put_file("/root/local.toml", b"site_name = \"bench\"\n", 0o644);
    node.put_file("/root/node-local.toml", b"roles = [\"app\"]\n", 0o644);
    let with = format!("{INSTALLED} apply");
    for _ in 0..3 {
        node.run(&["hyperfine", "-N", "--warmup", "3", "--runs", runs, "--export-json", "/tmp/b.json", &with])
            .assert_ok("hyperfine bundle");
        let json: serde_json::Value = serde_json::from_str(&node.read_file("/tmp/b.json")).unwrap();
        let with_ms = json["results"][0]["mean"].as_f64().unwrap() * 1e3;
        let with_med = json["results"][0]["median"].as_f64().unwrap() * 1e3;
        // The same node not following it: node.toml without the bundle, the settings local.
        node.sh("cp /etc/bootstrap/node.toml /root/node-bundle.toml && cp /root/node-local.toml /etc/bootstrap/node.toml && cp /root/local.toml /etc/bootstrap/site.toml")
            .assert_ok("no bundle");
        node.run(&["hyperfine", "-N", "--warmup", "3", "--runs", runs, "--export-json", "/tmp/n.json", &with])
            .assert_ok("hyperfine no bundle");
        node.sh("cp /root/node-bundle.toml /etc/bootstrap/node.toml && : > /etc/bootstrap/site.toml")
            .assert_ok("bundle again");
        let json: serde_json::Value = serde_json::from_str(&node.read_file("/tmp/n.json")).unwrap();
        let without_ms = json["results"][0]["mean"].as_f64().unwrap() * 1e3;
        let without_med = json["results"][0]["median"].as_f64().unwrap() * 1e3;
        println!(
            "  app with an unchanged site bundle (304): mean {with_ms:.2} median {with_med:.2} ms; without a bundle: mean {without_ms:.2} median {without_med:.2} ms"
        );
    }
    let served: Vec<String> = http.requests().into_iter().filter(|r| r.contains("site.bundle")).collect();
    println!(
        "  ({} bundle requests, {} answered 304)",
        served.len(),
        served.iter().filter(|r| r.ends_with("304")).count()
    );
}
