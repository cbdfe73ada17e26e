//! The main job (`scripts/lab`): a throwaway lab with real peers (knot for DNS, pebble as the
//! ACME CA) and five fresh Debian nodes bootstrapped the way an operator would: the operator
//! signs the fleet's settings as a site bundle and serves it; each node gets the binary with
//! wget, `./bootstrap --check ROLE`, `./bootstrap ROLE --site URL --site-key KEY`: three db
//! nodes forming one database cluster (Patroni on etcd, `db_ha`), then two app nodes sharing a
//! floating IP (keepalived). Then the operator publishes a new bundle (a firewall rule, a new
//! site name) and every node converges to it on its next run; haproxy stops on the node
//! holding the floating IP and the other takes it, the outage measured from a db node; the db
//! leader is killed under a writer on an app node, the seconds without writes and the inserts
//! lost printed, and the killed node boots and rejoins. A storage node (`bootstrap storage`,
//! installed after the app nodes) serves a shared volume the app nodes mount over SSHFS with
//! keys exchanged through DNS: a file written on app1 is read on app2. Prints what each run did
//! and what to look at. Three swarm nodes (`bootstrap swarm`) form a Docker Swarm through DNS,
//! sw1 first, the others with the join tokens the operator reads on it; the leader deploys the
//! bundle's stack and rolls out the second bundle's change to it. Teardown on Enter (at once without a terminal, or with `--no-wait`).

use std::io::IsTerminal;
use std::time::Duration;

use vm_tests::db_cluster::{leader, lost, now as db_now, start_writer, wait_cluster, writes_resumed};
use vm_tests::front::{holder, holder_but, now, outage, start_probe};
use vm_tests::operator::{download, serve_binary, INSTALLED};
use vm_tests::swarm::{fetch, import_web_image, join_token};
use vm_tests::{timed, Lab, RunOpts, Zone};

fn show(title: &str, r: &vm_tests::RunResult) {
    println!("\n=== {title} (exit {})", r.code);
    print!("{}{}", r.stdout, r.stderr);
}

fn main() {
    let lab = timed("lab ready", || Lab::new("demo"));
    let knot = lab.start_knot(&[Zone::new("lab.test")]);
    let pebble = lab.start_pebble();
    let key = knot.tsig_key().clone();
    let http = lab.http_server(0);
    serve_binary(&http);
    let mut dbs: Vec<_> = ["db1", "db2", "db3"].iter().map(|n| timed(&format!("boot {n}"), || lab.boot(n))).collect();
    // App nodes mount the shared volume over SSHFS: FUSE in the container.
    let app = timed("boot app1", || lab.node("app1").nspawn_arg("--bind=/dev/fuse").boot());
    let app2 = timed("boot app2", || lab.node("app2").nspawn_arg("--bind=/dev/fuse").boot());
    let store = timed("boot store", || lab.boot("store"));
    // A small Docker Swarm: three managers, the fleet's stack on them.
    let sws: Vec<_> =
        ["sw1", "sw2", "sw3"].iter().map(|n| timed(&format!("boot {n}"), || lab.node(n).docker().boot())).collect();
    const VIP: &str = "198.18.0.100";
    // Every swarm node serves "$GREETING from <node>" on :8081 (host mode: no IPVS here for
    // the routing mesh).
    const STACK: &str = "version: \"3.8\"\nservices:\n  front:\n    image: lab/web:1\n    hostname: \"{{.Node.Hostname}}\"\n    environment:\n      GREETING: \"${GREETING}\"\n    deploy:\n      mode: global\n    ports:\n      - {target: 80, published: 8081, mode: host}\n";

    let fleet = format!(
            "dns_zone = \"lab.test\"\ndns_server = \"198.18.0.1:53\"\ntsig_key_name = \"{}\"\nprivate_cidr = \"198.18.0.0/24\"\n\
             floating_ip = \"{VIP}/24\"\ndb_ha = true\nstorage_node = \"store.lab.test\"\nshared_volumes = [\"uploads\"]\n\
             swarm_stack_name = \"web\"\nswarm_stack_resolve_image = \"never\"\nswarm_stack = '''\n{STACK}'''\n",
            key.name
        );
    let app_site = |name: &str| {
        format!(
            "domain = \"{name}.lab.test\"\nacme_directory = \"{}\"\nacme_email = \"ops@lab.test\"\nacme_ca_file = \"/etc/bootstrap/acme-ca.pem\"\n",
            pebble.directory_url()
        )
    };
    // The operator's repository, signed and served: the fleet-wide settings.
    let repo = lab.dir().join("operator");
    std::fs::create_dir_all(&repo).unwrap();
    let bin = vm_tests::bootstrap_bin();
    let host = |args: &[&str]| {
        let o = std::process::Command::new(&bin).args(args).output().unwrap();
        assert!(o.status.success(), "bootstrap {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        print!("{}", String::from_utf8_lossy(&o.stdout));
    };
    let keys = lab.dir().join("keys");
    println!("\n=== operator: bootstrap site keygen");
    host(&["site", "keygen", keys.to_str().unwrap()]);
    let pubkey = std::fs::read_to_string(keys.join("site.pub")).unwrap().lines().nth(1).unwrap().to_string();
    let publish = |site: &str, serial: u64| {
        std::fs::write(repo.join("site.toml"), site).unwrap();
        let out = lab.dir().join("site.bundle");
        println!("\n=== operator: bootstrap site pack (serial {serial})");
        host(&[
            "site",
            "pack",
            repo.to_str().unwrap(),
            "--key",
            keys.join("site.key").to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--serial",
            &serial.to_string(),
        ]);
        http.put("site.bundle", std::fs::read(&out).unwrap());
        http.put("site.bundle.minisig", std::fs::read(lab.dir().join("site.bundle.minisig")).unwrap());
    };
    publish(&format!("{fleet}swarm_stack_env = [\"GREETING=hello\"]\n"), 1);
    let url = http.url("site.bundle");
    // Per-node values stay on the node and override the bundle's.
    for a in [&app, &app2] {
        a.put_file("/etc/bootstrap/site.toml", app_site(a.name()).as_bytes(), 0o644);
        a.put_file("/etc/bootstrap/acme-ca.pem", pebble.ca_pem().as_bytes(), 0o644);
    }
    let secrets = RunOpts::default()
        .env("BOOTSTRAP_SECRET_DNS_TSIG_KEY", &key.secret)
        .env("BOOTSTRAP_SECRET_DB_PASSWORD", "demo-password-change-me")
        .env("BOOTSTRAP_SECRET_VRRP_PASSWORD", "demo-vrp")
        .env("BOOTSTRAP_SECRET_DB_CLUSTER_SECRET", "demo-cluster-secret-change-me")
        .timeout(Duration::from_secs(600));

    // The storage node last: it finds the app nodes' keys in DNS at once; they mount at their
    // next run.
    let installs =
        [(&dbs[0], "db"), (&dbs[1], "db"), (&dbs[2], "db"), (&app, "app"), (&app2, "app"), (&store, "storage")];
    for (node, role) in installs {
        download(node, &http);
        let args = ["/root/bootstrap", "--site", url.as_str(), "--site-key", pubkey.as_str()];
        show(
            &format!("{}: ./bootstrap --check {role}", node.name()),
            &node.run_opts(&[&args[..], &["--check", role]].concat(), &secrets),
        );
        let r = timed(&format!("./bootstrap {role} on {}", node.name()), || {
            node.run_opts(&[&args[..], &[role]].concat(), &secrets)
        });
        show(&format!("{}: ./bootstrap {role}", node.name()), &r);
        let again = node.run(&[INSTALLED, "--check"]);
        println!("=== {}: bootstrap --check again: exit {} ({})", node.name(), again.code, again.stdout.trim());
    }

    // The swarm: sw1 initialises it; the operator reads the join tokens there and gives them
    // to sw2 and sw3, which join as managers.
    for (i, node) in sws.iter().enumerate() {
        download(node, &http);
        let mut opts = secrets.clone();
        if i > 0 {
            opts = opts
                .env("BOOTSTRAP_SECRET_SWARM_MANAGER_TOKEN", &join_token(&sws[0], "manager"))
                .env("BOOTSTRAP_SECRET_SWARM_WORKER_TOKEN", &join_token(&sws[0], "worker"));
        }
        let args = ["/root/bootstrap", "--site", url.as_str(), "--site-key", pubkey.as_str(), "swarm"];
        let r = timed(&format!("./bootstrap swarm on {}", node.name()), || node.run_opts(&args, &opts));
        show(&format!("{}: ./bootstrap swarm", node.name()), &r);
        import_web_image(node);
    }
    show("sw1: docker node ls", &sws[0].run(&["docker", "node", "ls"]));

    // The operator changes the repository: every node follows on its next run.
    publish(
        &format!(
            "{fleet}site_name = \"demo fleet, bundle 2\"\nfirewall_extra = [\"tcp/8443 from 198.18.0.0/24\"]\n\
             swarm_stack_env = [\"GREETING=hello from bundle 2\"]\n"
        ),
        2,
    );
    for node in [&dbs[0], &dbs[1], &dbs[2], &app, &app2, &store, &sws[1], &sws[2], &sws[0]] {
        let r = node.run(&[INSTALLED, "apply"]);
        show(&format!("{}: bootstrap apply (what the schedule runs) after the new bundle", node.name()), &r);
        let rule = node.run(&["nft", "list", "table", "inet", "bootstrap"]).stdout.contains("8443");
        println!(
            "{}: firewall has tcp/8443: {rule}; motd: {}",
            node.name(),
            node.read_file("/etc/motd").lines().find(|l| !l.trim().is_empty()).unwrap_or("")
        );
    }

    println!("\n=== The swarm's stack (deployed by its leader from the bundle's compose file)");
    show("sw1: docker service ls", &sws[0].run(&["docker", "service", "ls"]));
    for node in &sws {
        let url = format!("http://{}:8081/", node.addr());
        let page =
            vm_tests::cmd::poll(Duration::from_secs(60), || Some(fetch(&app, &url)).filter(|p| p.contains("bundle 2")));
        println!("{url} from app1: {:?}", page.unwrap_or_else(|| fetch(&app, &url)));
    }

    // The shared volume: written on one app node, read on the other and on the storage node.
    println!("\n=== Shared storage (SSHFS from store, keys exchanged through DNS)");
    app.sh("echo written-on-app1 > /srv/share/uploads/hello.txt").assert_ok("write on app1");
    let read = |n: &vm_tests::Node| n.run(&["cat", "/srv/share/uploads/hello.txt"]).stdout.trim().to_string();
    println!("app1 wrote /srv/share/uploads/hello.txt; app2 reads {:?}, store reads {:?}", read(&app2), read(&store));
    println!(
        "store authorizes: {:?}",
        store
            .read_file("/etc/ssh/bootstrap-share/authorized_keys")
            .lines()
            .filter(|l| l.starts_with("restrict"))
            .map(|l| l.split(' ').next().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    );

    // The front survives the loss of haproxy on the node holding the floating IP.
    println!("\n=== The floating IP {VIP}");
    let db = &dbs[0];
    db.sh("apt-get update -qq && apt-get install -y -qq curl >/dev/null").assert_ok("curl on db1");
    let fronts = [&app, &app2];
    let master = holder(VIP, &fronts, Duration::from_secs(30));
    println!("{} holds {VIP}; db1 asks https://{VIP}/ every 0.1 s", master.name());
    start_probe(db, &format!("-k https://{VIP}/"));
    std::thread::sleep(Duration::from_secs(2));
    let t = now(db);
    master.run(&["systemctl", "stop", "haproxy"]).assert_ok("stop haproxy");
    println!("stopped haproxy on {}", master.name());
    let other = holder_but(VIP, &fronts, master.name(), Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let (secs, by) = outage(db, t);
    println!("{} took {VIP}: {secs:.1} s without an answer, then answered by {by}", other.name());
    db.run(&["systemctl", "stop", "probe"]);
    let r = master.run(&[INSTALLED, "apply"]);
    show(&format!("{}: bootstrap apply heals haproxy (the address stays with {})", master.name(), other.name()), &r);

    // The database survives the loss of its leader (Patroni on etcd, synchronous replication).
    println!("\n=== The database cluster");
    show("db1: patronictl list", &dbs[0].run(&["patronictl", "-c", "/etc/patroni/config.yml", "list"]));
    app.sh("apt-get install -y -qq postgresql-client >/dev/null").assert_ok("psql on app1");
    app.sh("set -a; . /etc/bootstrap/app/database.env; psql -X -q -c 'create table acks (n int primary key)'")
        .assert_ok("table");
    start_writer(&app);
    std::thread::sleep(Duration::from_secs(3));
    let leading = leader(&dbs[0]).expect("a leader");
    let i = dbs.iter().position(|d| d.name() == leading).unwrap();
    println!("app1 inserts a row every ~20 ms through its pool (127.0.0.1:5432); killing the leader {leading}");
    let at = db_now();
    dbs[i].kill();
    let (resumed, seen) = writes_resumed(&app, at, Duration::from_secs(120));
    let o = (i + 1) % dbs.len();
    let new =
        vm_tests::cmd::poll(Duration::from_secs(60), || leader(&dbs[o]).filter(|l| *l != leading)).expect("leader");
    let on = dbs.iter().find(|d| d.name() == new).unwrap();
    let missing = lost(on, &seen);
    println!(
        "writes resumed after {resumed:.1} s on the new leader {new}; {} inserts acknowledged, {} lost",
        seen.len(),
        missing.len()
    );
    dbs[i].start();
    wait_cluster(&dbs[o], 3, Duration::from_secs(180));
    show(
        &format!("{leading} booted again: patronictl list"),
        &dbs[o].run(&["patronictl", "-c", "/etc/patroni/config.yml", "list"]),
    );

    let root = lab.dir().join("pebble-root.pem");
    std::fs::write(&root, pebble.issuing_root()).unwrap();
    println!("\n=== What the fleet looks like");
    println!("DNS (knot): db1 A {:?}, app1 A {:?}", knot.query("db1.lab.test", "A"), knot.query("app1.lab.test", "A"));
    println!("            _postgresql._tcp SRV {:?}", knot.query("_postgresql._tcp.lab.test", "SRV"));
    println!("            _https._tcp SRV {:?}", knot.query("_https._tcp.lab.test", "SRV"));
    println!("            _sshfs._tcp SRV {:?}", knot.query("_sshfs._tcp.lab.test", "SRV"));
    println!("            _swarm-manager._tcp SRV {:?}", knot.query("_swarm-manager._tcp.lab.test", "SRV"));
    let pool: Vec<String> = app
        .read_file("/etc/haproxy/haproxy.cfg")
        .lines()
        .filter(|l| l.contains("server db"))
        .map(|l| l.trim().to_string())
        .collect();
    println!("app1's database pool: {pool:?}");
    let page = lab
        .command("curl")
        .args(["-sS", "--cacert"])
        .arg(&root)
        .args(["--resolve", &format!("app1.lab.test:443:{}", app.addr()), "https://app1.lab.test/"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().find(|l| l.contains("<h1>")).unwrap_or("").to_string())
        .unwrap_or_default();
    println!("https://app1.lab.test/ (verified against pebble's root): {}", page.trim());
    for node in [&dbs[0], &app, &app2] {
        show(&format!("{}: bootstrap status", node.name()), &node.run(&[INSTALLED, "status"]));
    }

    println!("\nWhat to look at:");
    for node in [&dbs[0], &dbs[1], &dbs[2], &app, &app2, &store, &sws[0], &sws[1], &sws[2]] {
        println!("  {} at {}: `nsenter -t {} -a bash`, then `bootstrap status`, `bootstrap --check`, `journalctl -t bootstrap`", node.name(), node.addr(), node.pid1());
    }
    println!(
        "  from the lab host: `nsenter --net=/run/netns/{} curl --cacert {} --resolve app1.lab.test:443:{} https://app1.lab.test/`",
        lab.name(),
        root.display(),
        app.addr()
    );
    println!(
        "  the floating IP: `nsenter --net=/run/netns/{} curl -k https://{VIP}/` (stop haproxy on the node that holds it: `ip -4 addr` there)",
        lab.name()
    );
    let wait = std::io::stdin().is_terminal() && !std::env::args().any(|a| a == "--no-wait");
    if wait {
        println!("\nPress Enter to tear the lab down.");
        let _ = std::io::stdin().read_line(&mut String::new());
    }
    println!("Tearing down.");
    drop(pebble);
    drop(knot);
}
