//! The fleet follows its signed repository. The operator keeps `site.toml` and a role of their
//! own (`shop`: a user, a static binary fetched by URL with its sha256, a systemd unit, served
//! behind haproxy, and a template overriding an embedded one), packs and signs it on the lab
//! host, and serves it over HTTP. Three fresh nodes are installed from the bundle; a new bundle
//! (a firewall rule, another upstream port) reaches every node by its own schedule (cron, one
//! minute here); a tampered bundle and a stopped server are refused with /etc and the nft
//! ruleset unchanged; the example application survives drift; `bootstrap_version` in the bundle
//! moves every node to the next release and back. Every node ends converged.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vm_tests::cmd::wait_for;
use vm_tests::operator::{download, serve_binary, INSTALLED};
use vm_tests::releases::Releases;
use vm_tests::report::{apply, check, parse, Status};
use vm_tests::{bootstrap_bin, timed, HttpServer, Lab, Node, RunOpts};

const SHOP_ROLE: &str = r#"
description = "The shop: a small web application behind the app role's haproxy"
includes = ["app"]

[settings.shop_port]
type = "port"
default = 8080
prompt = "Local port of the shop application"

[settings.shop_binary_url]
type = "url"
prompt = "Where the shop's static binary is downloaded from"
required = true

[settings.shop_binary_sha256]
type = "string"
prompt = "Its sha256"
required = true

[[state]]
id = "shop-user"
type = "user"
name = "shop"
home = "/srv/shop"
shell = "/usr/sbin/nologin"

[[state]]
id = "shop-dir"
type = "directory"
path = "/srv/shop"
owner = "shop"
group = "shop"
mode = "0755"
requires = ["shop-user"]

[[state]]
id = "shop-page"
type = "file"
path = "/srv/shop/index.html"
template = "shop.html.hbs"
# In a directory the shop owns, its files are the shop's too (bootstrap refuses to write a
# root-owned file where another user could replace it).
owner = "shop"
group = "shop"
requires = ["shop-dir"]

[[state]]
id = "shop-binary"
type = "file"
path = "/usr/local/bin/shop-httpd"
source = "{{settings.shop_binary_url}}"
sha256 = "{{settings.shop_binary_sha256}}"
mode = "0755"

[[state]]
id = "shop-unit"
type = "file"
path = "/etc/systemd/system/shop.service"
template = "shop.service.hbs"
notify = ["restart shop"]

[[state]]
id = "shop-service"
type = "service"
name = "shop"
enabled = true
running = true
requires = ["shop-unit", "shop-binary", "shop-page"]
"#;

const SHOP_UNIT: &str = "[Unit]\nDescription=The shop (busybox httpd)\nAfter=network.target\n\n\
[Service]\nUser=shop\nExecStart=@/usr/local/bin/shop-httpd busybox httpd -f -p 127.0.0.1:{{settings.shop_port}} -h /srv/shop\n\
Restart=always\n\n[Install]\nWantedBy=multi-user.target\n";

/// The operator's repository, as a directory on the lab host.
fn repository(dir: &Path, site: &str) {
    std::fs::create_dir_all(dir.join("roles")).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(dir.join("site.toml"), site).unwrap();
    std::fs::write(dir.join("roles/shop.toml"), SHOP_ROLE).unwrap();
    std::fs::write(dir.join("templates/shop.html.hbs"), "<h1>shop on {{facts.hostname}}</h1>\n").unwrap();
    std::fs::write(dir.join("templates/shop.service.hbs"), SHOP_UNIT).unwrap();
    // Overrides the embedded login banner by name.
    std::fs::write(dir.join("templates/motd.hbs"), "{{settings.site_name}}: the shop fleet ({{facts.hostname}})\n")
        .unwrap();
}

fn host_bootstrap(args: &[&str]) -> String {
    let o = Command::new(bootstrap_bin()).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "bootstrap {args:?}: {text}");
    text
}

/// Pack and sign `dir` at `serial`, and serve it.
fn publish(http: &HttpServer, dir: &Path, key: &Path, serial: u64) -> (Vec<u8>, Vec<u8>) {
    let out = dir.join("site.bundle");
    host_bootstrap(&[
        "site",
        "pack",
        dir.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--serial",
        &serial.to_string(),
    ]);
    let (b, s) = (std::fs::read(&out).unwrap(), std::fs::read(dir.join("site.bundle.minisig")).unwrap());
    http.put("site.bundle", b.clone());
    http.put("site.bundle.minisig", s.clone());
    (b, s)
}

/// A fingerprint of what a failed run must not touch: /etc and the live firewall.
fn fingerprint(node: &Node) -> String {
    node.sh("find /etc -xdev -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum; nft list ruleset | sha256sum")
        .assert_ok("fingerprint")
        .stdout
}

fn page(client: &Node, node: &Node) -> String {
    client.run(&["curl", "-sSk", "--max-time", "5", &format!("https://{}/", node.addr())]).stdout
}

#[test]
fn three_nodes_follow_the_signed_bundle_and_keep_the_last_good_one() {
    let lab = Lab::new("bundle");
    let http = lab.http_server(0);
    serve_binary(&http);
    // The example application's binary: busybox, static, fetched by URL and sha256.
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static on the lab host (scripts/setup)");
    let busybox_sum = states::engine::content::sha256_hex(&busybox);
    http.put("shop-httpd", busybox);

    let host = tempfile::tempdir().unwrap();
    host_bootstrap(&["site", "keygen", host.path().join("keys").to_str().unwrap()]);
    let key = host.path().join("keys/site.key");
    let pubkey =
        std::fs::read_to_string(host.path().join("keys/site.pub")).unwrap().lines().nth(1).unwrap().to_string();
    let repo = host.path().join("repo");
    let site = |port: u16, extra: &str| {
        format!(
            "site_name = \"shop\"\nschedule_minutes = 1\nupstreams = [\"127.0.0.1:{port}\"]\nshop_port = {port}\n\
             shop_binary_url = \"{}\"\nshop_binary_sha256 = \"{busybox_sum}\"\n{extra}",
            http.url("shop-httpd")
        )
    };
    repository(&repo, &site(8080, ""));
    let good = publish(&http, &repo, &key, 1);
    let url = http.url("site.bundle");

    let nodes: Vec<Node> = ["shop1", "shop2", "shop3"].iter().map(|n| lab.boot(n)).collect();
    let client = lab.boot("client");
    client.sh("apt-get update -qq && apt-get install -y -qq curl >/dev/null").assert_ok("curl");
    let long = RunOpts::default().timeout(Duration::from_secs(600));
    for node in &nodes {
        download(node, &http);
        let r = timed(&format!("./bootstrap shop on {}", node.name()), || {
            node.run_opts(&["/root/bootstrap", "--site", &url, "--site-key", &pubkey, "shop"], &long)
        });
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        let want = format!("<h1>shop on {}</h1>", node.name());
        if vm_tests::cmd::poll(Duration::from_secs(20), || page(&client, node).contains(&want).then_some(())).is_none()
        {
            let why = node.sh("systemctl status shop --no-pager; journalctl -u shop --no-pager | tail -20; ls -la /srv/shop /usr/local/bin").stdout;
            panic!("{} does not serve the shop: {}\n{why}", node.name(), page(&client, node));
        }
        assert!(node.read_file("/etc/motd").contains("the shop fleet"), "the bundle's template did not override");
    }

    // A new bundle: a firewall rule and another upstream port. Each node's own schedule
    // (cron, every minute here) brings it: no one logs in.
    repository(&repo, &site(8081, "firewall_extra = [\"tcp/8443\"]\n"));
    let newer = publish(&http, &repo, &key, 2);
    let started = std::time::Instant::now();
    for node in &nodes {
        wait_for(&format!("bundle 2 on {}", node.name()), Duration::from_secs(180), || {
            let r = node.read_file("/var/lib/bootstrap/last-run.json");
            let rep: vm_tests::report::RunReport = serde_json::from_str(&r).ok()?;
            (rep.site?.serial == Some(2) && rep.failed == 0).then_some(())
        });
    }
    eprintln!(
        "[figure] bundle change on every node after {:.0} s (schedule: 1 minute)",
        started.elapsed().as_secs_f64()
    );
    for node in &nodes {
        assert!(node.read_file("/etc/haproxy/haproxy.cfg").contains("127.0.0.1:8081 check"), "{}", node.name());
        assert!(node.run(&["nft", "list", "table", "inet", "bootstrap"]).stdout.contains("8443"), "{}", node.name());
        wait_for("the shop on 8081", Duration::from_secs(20), || {
            page(&client, node).contains("<h1>shop").then_some(())
        });
    }

    // Refused, the node left as it was: a tampered bundle, then the server stopped.
    let shop1 = &nodes[0];
    let mut tampered = newer.0.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    http.put("site.bundle", tampered);
    let before = fingerprint(shop1);
    let r = shop1.run(&[INSTALLED, "apply", "--json"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(parse(&r).site.unwrap().error.unwrap().contains("does not match"));
    assert_eq!(fingerprint(shop1), before, "a tampered bundle changed /etc or the firewall");
    let status = shop1.run(&[INSTALLED, "status"]);
    assert!(status.code == 1 && status.stdout.contains("does not match"), "{}", status.stdout);
    // An old bundle, validly signed: a replay.
    http.put("site.bundle", good.0.clone());
    http.put("site.bundle.minisig", good.1.clone());
    let r = shop1.run(&[INSTALLED, "apply", "--json"]);
    assert!(parse(&r).site.unwrap().error.unwrap().contains("older"), "{}", r.stdout);
    assert_eq!(fingerprint(shop1), before);
    http.remove("site.bundle");
    http.remove("site.bundle.minisig");
    let r = shop1.run(&[INSTALLED, "apply", "--json"]);
    assert_eq!(r.code, 1);
    assert!(parse(&r).site.unwrap().error.unwrap().contains("404"), "{}", r.stdout);
    assert_eq!(fingerprint(shop1), before, "a missing bundle changed /etc or the firewall");
    http.put("site.bundle", newer.0.clone());
    http.put("site.bundle.minisig", newer.1.clone());

    // The example application heals like any other state.
    shop1.sh("systemctl stop shop && rm /srv/shop/index.html").assert_ok("drift");
    let (code, rep) = check(shop1);
    assert_eq!(code, 2);
    let pending = rep.ids_with(Status::Pending);
    assert!(pending.contains(&"shop-page".to_string()) && pending.contains(&"shop-service".to_string()), "{pending:?}");
    apply(shop1);
    assert!(page(&client, shop1).contains("<h1>shop on shop1</h1>"));

    // The fleet's binary is one line of the bundle: up to the next release, then back, on
    // every node by its own schedule.
    let rel = Releases::from_env();
    let releases = rel.serve(&http);
    for (serial, pin) in [(3, &rel.next), (4, &rel.current)] {
        let pinned =
            format!("firewall_extra = [\"tcp/8443\"]\nrelease_url = \"{releases}\"\nbootstrap_version = \"{pin}\"\n");
        repository(&repo, &site(8081, &pinned));
        publish(&http, &repo, &key, serial);
        let started = std::time::Instant::now();
        for node in &nodes {
            wait_for(&format!("bootstrap {pin} on {}", node.name()), Duration::from_secs(240), || {
                let v = node.run(&[INSTALLED, "--version"]).stdout;
                let r = node.read_file("/var/lib/bootstrap/last-run.json");
                let rep: vm_tests::report::RunReport = serde_json::from_str(&r).ok()?;
                (v.trim() == format!("bootstrap {pin}") && rep.site?.serial == Some(serial) && rep.failed == 0)
                    .then_some(())
            });
        }
        eprintln!("[figure] bootstrap_version {pin} on every node after {:.0} s", started.elapsed().as_secs_f64());
    }

    // Converged everywhere: an unchanged bundle is a 304, a run changes nothing, --check is 0.
    for node in &nodes {
        assert_eq!(apply(node).changed, 0, "{} changed on a second run", node.name());
        let (code, _) = check(node);
        assert_eq!(code, 0, "{} --check", node.name());
    }
    let not_modified = http.requests().iter().filter(|r| r.starts_with("GET /site.bundle 304")).count();
    assert!(not_modified > 0, "no conditional request was answered 304: {:?}", http.requests());
}
