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
}
