//! Docker Swarm (issue 16), in fresh containers with knot and Debian's docker.io: five nodes
//! bootstrapped one after another (`bootstrap swarm`) form one swarm of three managers and two
//! workers, the first initialising it and the others joining through the managers registered
//! in DNS with the join tokens given as secrets. The leader deploys the site's stack: a global
//! service on every node and a replicated one pinned to sw4 by hostname, which answers through
//! haproxy on an app node. A changed compose file is rolled out by the leader's next run (not
//! by another manager's), an unchanged one deploys nothing. A decommissioned worker leaves; a
//! manager whose leaving would break the quorum (another manager down) is refused and nothing
//! changes. Every node ends converged; the join tokens and the stack's secret are in no output
//! and no journal. Prints the time each node took to join.
//!
//! The routing mesh (ingress) needs IPVS, which this machine's kernel lacks
//! (`/proc/net/ip_vs` is absent, no module to load): the stack publishes its ports in host
//! mode, which uses Docker's own forwarding rules.

use std::time::{Duration, Instant};

use vm_tests::cmd::poll;
use vm_tests::operator::{download, serve_binary, INSTALLED};
use vm_tests::report::{self, apply, check, state, Status};
use vm_tests::swarm::{fetch, import_web_image as import_image, join_token, node_list};
use vm_tests::{Lab, Node, RunOpts, RunResult, Zone};

const STACK_SECRET: &str = "canary-stack-Secret-0016";

fn compose(greeting_suffix: &str) -> String {
    format!(
        r#"version: "3.8"
services:
  front:
    image: lab/web:1
    hostname: "{{{{.Node.Hostname}}}}"
    environment:
      GREETING: "${{GREETING}}{greeting_suffix}"
      APP_SECRET: "${{APP_SECRET}}"
    deploy:
      mode: global
    ports:
      - target: 80
        published: 8081
        mode: host
  api:
    image: lab/web:1
    hostname: "api-on-{{{{.Node.Hostname}}}}"
    environment:
      GREETING: "${{GREETING}}"
    deploy:
      replicas: 1
      placement:
        constraints: ["node.hostname == sw4"]
    ports:
      - target: 80
        published: 8082
        mode: host
"#
    )
}

fn site(tsig: &str, compose: &str, labels: &str) -> String {
    format!(
        "dns_zone = \"lab.test\"\ndns_server = \"198.18.0.1:53\"\ntsig_key_name = \"{tsig}\"\n\
         private_cidr = \"198.18.0.0/24\"\nswarm_managers = 3\nswarm_labels = [{labels}]\n\
         swarm_stack_name = \"shop\"\nswarm_stack_env = [\"GREETING=hello\"]\n\
         swarm_stack_secret_env = \"APP_SECRET\"\nswarm_stack_resolve_image = \"never\"\n\
         swarm_stack = '''\n{compose}'''\n"
    )
}

fn swarm_state(node: &Node) -> String {
    node.run(&["docker", "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"])
        .stdout
        .trim()
        .into()
}

#[test]
fn five_nodes_form_one_swarm_and_run_the_sites_stack() {
    let lab = Lab::new("swarm");
    let knot = lab.start_knot(&[Zone::new("lab.test")]);
    let key = knot.tsig_key().clone();
    let http = lab.http_server(0);
    serve_binary(&http);
    let names = ["sw1", "sw2", "sw3", "sw4", "sw5"];
    let sw: Vec<Node> = names.iter().map(|n| lab.node(n).docker().boot()).collect();
    let app = lab.boot("app1");
    let base = RunOpts::default()
        .env("BOOTSTRAP_SECRET_DNS_TSIG_KEY", &key.secret)
        .env("BOOTSTRAP_SECRET_SWARM_STACK_SECRET", STACK_SECRET)
        .timeout(Duration::from_secs(900));
    let labels = |n: &str| if n == "sw4" { "\"tier=api\"" } else { "" }.to_string();
    let install = |node: &Node, opts: &RunOpts, role: &str, site_text: &str| -> RunResult {
        download(node, &http);
        node.put_file("/root/site.toml", site_text.as_bytes(), 0o644);
        node.run_opts(&["/root/bootstrap", "--json", "--site", "/root/site.toml", role], opts)
    };
    let mut outputs: Vec<String> = Vec::new();

    // The first node initialises the swarm (no token needed) and registers as a manager.
    let t = Instant::now();
    let r = install(&sw[0], &base, "swarm", &site(&key.name, &compose(""), &labels("sw1")));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    println!("[swarm] sw1 installed and initialised the swarm in {:.1}s", t.elapsed().as_secs_f64());
    outputs.push(r.stdout + &r.stderr);
    assert_eq!(swarm_state(&sw[0]), "active true");
    let srv = knot.query("_swarm-manager._tcp.lab.test", "SRV");
    assert!(srv.len() == 1 && srv[0].contains("sw1.lab.test"), "{srv:?}");
    let daemon = sw[0].read_file("/etc/docker/daemon.json");
    assert!(daemon.contains("\"max-size\"") && daemon.contains(&format!("\"ip\": \"{}\"", sw[0].addr())), "{daemon}");

    // The operator reads the tokens on the manager and gives them to the later nodes.
    let (manager_token, worker_token) = (join_token(&sw[0], "manager"), join_token(&sw[0], "worker"));
    let joining = base
        .clone()
        .env("BOOTSTRAP_SECRET_SWARM_MANAGER_TOKEN", &manager_token)
        .env("BOOTSTRAP_SECRET_SWARM_WORKER_TOKEN", &worker_token);

    // Without its token a node says which one it needs and where to get it.
    let r = install(&sw[1], &base, "swarm", &site(&key.name, &compose(""), ""));
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let why = state(&report::parse(&r), "swarm-member").error.clone().unwrap_or_default();
    assert!(
        why.contains("joins the swarm as a manager") && why.contains("docker swarm join-token -q manager"),
        "{why}"
    );
    assert_eq!(swarm_state(&sw[1]), "inactive false");

    import_image(&sw[0]);
    for (i, node) in sw.iter().enumerate().skip(1) {
        let t = Instant::now();
        let r = install(node, &joining, "swarm", &site(&key.name, &compose(""), &labels(names[i])));
        assert_eq!(r.code, 0, "{}: {}\n{}", node.name(), r.stdout, r.stderr);
        let role = if i < 3 { "manager" } else { "worker" };
        println!("[swarm] {} installed and joined as a {role} in {:.1}s", node.name(), t.elapsed().as_secs_f64());
        let joined = report::summaries(&report::parse(&r), "swarm-member").join("; ");
        assert!(joined.contains(&format!("join the swarm as a {role}")), "{}: {joined}", node.name());
        outputs.push(r.stdout + &r.stderr);
        import_image(node);
    }
    let list = node_list(&sw[0]);
    let managers: Vec<&str> = list.iter().filter(|n| !n.2.is_empty()).map(|n| n.0.as_str()).collect();
    assert_eq!(managers, ["sw1", "sw2", "sw3"], "{list:?}");
    assert_eq!(list.len(), 5, "{list:?}");
    assert!(list.iter().all(|n| n.1 == "Ready"), "{list:?}");
    let srv = knot.query("_swarm-manager._tcp.lab.test", "SRV");
    assert_eq!(srv.len(), 3, "{srv:?}");
    let engine_labels =
        sw[0].run(&["docker", "node", "inspect", "sw4", "--format", "{{.Description.Engine.Labels}}"]).stdout;
    assert!(engine_labels.contains("tier:api"), "{engine_labels}");

    // The stack: the global service on every node, the pinned one on sw4 only.
    apply(&sw[0]);
    for node in &sw {
        let page = poll(Duration::from_secs(120), || {
            let p = fetch(&app, &format!("http://{}:8081/", node.addr()));
            (p == format!("hello from {}", node.name())).then_some(p)
        });
        assert!(
            page.is_some(),
            "front on {}: {:?}\n{}",
            node.name(),
            fetch(&app, &format!("http://{}:8081/", node.addr())),
            sw[0].run(&["docker", "service", "ps", "--no-trunc", "shop_front"]).stdout
        );
    }
    let api = poll(Duration::from_secs(120), || {
        let p = fetch(&app, &format!("http://{}:8082/", sw[3].addr()));
        (p == "hello from api-on-sw4").then_some(p)
    });
    assert!(api.is_some(), "api on sw4: {:?}", fetch(&app, &format!("http://{}:8082/", sw[3].addr())));
    for other in [&sw[0], &sw[1], &sw[4]] {
        assert!(fetch(&app, &format!("http://{}:8082/", other.addr())).is_empty(), "api runs on {}", other.name());
    }
    // The stack's secret reached the service, not the command line or a file but its own.
    let env = sw[0].run(&[
        "docker",
        "service",
        "inspect",
        "shop_front",
        "--format",
        "{{json .Spec.TaskTemplate.ContainerSpec.Env}}",
    ]);
    assert!(env.stdout.contains(STACK_SECRET), "{}", env.stdout);
    let mode = sw[0].run(&["stat", "-c", "%a", "/etc/bootstrap/stacks/shop/stack.env"]).stdout;
    assert_eq!(mode.trim(), "600");

    // Through haproxy on an app node.
    let app_site = format!(
        "dns_zone = \"lab.test\"\ndns_server = \"198.18.0.1:53\"\ntsig_key_name = \"{}\"\nprivate_cidr = \"198.18.0.0/24\"\n\
         upstreams = [\"sw4.lab.test:8082\"]\n",
        key.name
    );
    let r = install(&app, &base.clone().env("BOOTSTRAP_SECRET_DB_PASSWORD", "canary-db-Pw-0016"), "app", &app_site);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let through = poll(Duration::from_secs(30), || {
        let p = fetch(&app, "https://127.0.0.1/");
        (p == "hello from api-on-sw4").then_some(p)
    });
    assert!(through.is_some(), "through haproxy: {:?}", fetch(&app, "https://127.0.0.1/"));

    // A changed compose file: another manager's run writes it but does not deploy; the
    // leader's does, once.
    for (i, node) in sw.iter().enumerate() {
        node.put_file(
            "/etc/bootstrap/site.toml",
            site(&key.name, &compose(" v2"), &labels(names[i])).as_bytes(),
            0o600,
        );
    }
    let r = apply(&sw[1]);
    assert_eq!(state(&r, "stack-compose").status, Status::Changed);
    assert_eq!(state(&r, "stack").status, Status::Unchanged, "a follower deployed");
    let (code, rep) = check(&sw[0]);
    assert_eq!(code, 2);
    let pending =
        report::summaries(&rep, "stack-compose").join("\n") + &format!("{:?}", state(&rep, "stack-compose").changes);
    assert!(pending.contains("v2"), "--check does not show the compose file's difference: {pending}");
    let r = apply(&sw[0]);
    let deployed = report::summaries(&r, "stack").join("; ");
    assert!(deployed.contains("deploy stack shop") && deployed.contains("runs an older file"), "{deployed}");
    let v2 = poll(Duration::from_secs(120), || {
        let p = fetch(&app, &format!("http://{}:8081/", sw[2].addr()));
        (p == "hello v2 from sw3").then_some(p)
    });
    assert!(v2.is_some(), "v2 not rolled out: {:?}", fetch(&app, &format!("http://{}:8081/", sw[2].addr())));
    // Nothing deployed: the services' spec versions stay as they are.
    let versions = || {
        sw[0].run(&["docker", "service", "inspect", "shop_front", "shop_api", "--format", "{{.Version.Index}}"]).stdout
    };
    let before = versions();
    let r = apply(&sw[0]);
    assert_eq!(r.changed, 0, "an unchanged file changed something: {:?}", r.ids_with(Status::Changed));
    assert_eq!(versions(), before, "an unchanged file was deployed");

    // A worker decommissioned leaves the swarm.
    let r = sw[4].run_opts(&[INSTALLED, "decommission"], &joining);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(swarm_state(&sw[4]), "inactive false");
    let gone =
        poll(Duration::from_secs(60), || node_list(&sw[0]).iter().any(|n| n.0 == "sw5" && n.1 == "Down").then_some(()));
    assert!(gone.is_some(), "{:?}", node_list(&sw[0]));

    // With sw3's Docker stopped, sw2 leaving would leave one reachable manager of two: refused,
    // and nothing changes (still a manager, still registered, still scheduled).
    sw[2].run(&["systemctl", "stop", "docker.socket", "docker"]).assert_ok("stop docker on sw3");
    let down = poll(Duration::from_secs(60), || {
        node_list(&sw[0]).iter().any(|n| n.0 == "sw3" && n.2 == "Unreachable").then_some(())
    });
    assert!(down.is_some(), "{:?}", node_list(&sw[0]));
    let r = sw[1].run_opts(&[INSTALLED, "decommission"], &joining);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("refused") && r.stderr.contains("quorum") && r.stderr.contains("sw3"), "{}", r.stderr);
    assert_eq!(swarm_state(&sw[1]), "active true");
    assert!(sw[1].exists("/etc/cron.d/bootstrap") && !sw[1].exists("/var/lib/bootstrap/decommissioned"));
    assert_eq!(knot.query("_swarm-manager._tcp.lab.test", "SRV").len(), 3);
    outputs.push(r.stdout + &r.stderr);
    sw[2].run(&["systemctl", "start", "docker"]).assert_ok("start docker on sw3");
    let back = poll(Duration::from_secs(90), || {
        node_list(&sw[0]).iter().any(|n| n.0 == "sw3" && n.2 == "Reachable").then_some(())
    });
    assert!(back.is_some(), "{:?}", node_list(&sw[0]));

    // Converged: a second run changes nothing and --check exits 0, on every node left.
    for node in sw.iter().take(4).chain([&app]) {
        let first = node.run(report::APPLY);
        assert_eq!(first.code, 0, "{}: {}\n{}", node.name(), first.stdout, first.stderr);
        outputs.push(first.stdout + &first.stderr);
        let again = apply(node);
        assert_eq!(again.changed, 0, "{}: {:?}", node.name(), again.ids_with(Status::Changed));
        let (code, rep) = check(node);
        assert_eq!(code, 0, "{}: {:?}", node.name(), rep.ids_with(Status::Pending));
    }

    vm_tests::measure::noop_run(&sw[0], "the swarm's leader, with the stack");
    vm_tests::measure::noop_run(&sw[3], "a worker");

    // No token and no stack secret in any output or journal.
    for needle in [&manager_token, &worker_token, &STACK_SECRET.to_string(), &key.secret] {
        for out in &outputs {
            assert!(!out.contains(needle.as_str()), "a secret in the output:\n{out}");
        }
    }
    for node in &sw {
        let journal = node.journal(&["-b"]);
        for needle in [&manager_token, &worker_token, &STACK_SECRET.to_string()] {
            assert!(!journal.contains(needle.as_str()), "{}: a secret in the journal", node.name());
        }
    }
}
