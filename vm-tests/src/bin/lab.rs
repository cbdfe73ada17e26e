//! The main job (`scripts/lab`): a throwaway lab of fresh Debian containers, each bootstrapped
//! the way an operator would, and a printout of what to look at. Teardown on Enter (at once
//! without a terminal, or with `--no-wait`).

use std::io::IsTerminal;

use vm_tests::operator::{bootstrap, download, serve_binary};
use vm_tests::{timed, Lab};

fn main() {
    let lab = timed("lab ready", || Lab::new("demo"));
    let http = lab.http_server(0);
    serve_binary(&http);
    let nodes = [("app1", "app"), ("db1", "db")];
    let mut booted = Vec::new();
    for (name, role) in nodes {
        let node = timed(&format!("boot {name}"), || lab.boot(name));
        download(&node, &http);
        println!("\n=== {name} ({}): ./bootstrap --check {role}", node.addr());
        let check = bootstrap(&node, &["--check", role]);
        print!("{}{}", check.stdout, check.stderr);
        println!("(exit {})", check.code);
        println!("\n=== {name}: ./bootstrap {role}");
        let apply = timed(&format!("bootstrap {name}"), || bootstrap(&node, &[role]));
        print!("{}{}", apply.stdout, apply.stderr);
        println!("(exit {})", apply.code);
        let again = bootstrap(&node, &["--check", role]);
        println!("\n=== {name}: ./bootstrap --check {role} again: exit {} ({})", again.code, again.stdout.trim());
        booted.push(node);
    }

    println!("\nWhat to look at:");
    for node in &booted {
        println!(
            "  {} at {}: enter with `nsenter -t {} -a bash`; see /etc/motd, /var/www/bootstrap/index.html, /var/lib/bootstrap/",
            node.name(),
            node.addr(),
            node.pid1()
        );
    }
    println!("  lab network namespace: {} (198.18.0.0/24), scratch: {}", lab.name(), lab.dir().display());
    let wait = std::io::stdin().is_terminal() && !std::env::args().any(|a| a == "--no-wait");
    if wait {
        println!("\nPress Enter to tear the lab down.");
        let _ = std::io::stdin().read_line(&mut String::new());
    }
    println!("Tearing down.");
}
