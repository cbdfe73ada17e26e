//! The shipped roles (`roles/*.toml` and their templates), compiled by the same pipeline a
//! node runs, alone and together, with no settings and with a full fleet's: a typo in a role
//! or a template that names missing data fails here in seconds, not in a lab scenario.

mod fake;
mod support;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::json;
use states::engine::facts::{Facts, Os};
use states::role::DirSource;

/// Every setting the shipped roles declare, as a fleet would set them.
const FLEET: &str = r#"
site_name = "shop"
schedule_minutes = 15
peer_grace_minutes = 30
private_cidr = "198.18.0.0/24"
dns_zone = "lab.test"
dns_server = "198.18.0.1:53"
tsig_key_name = "bootstrap"
ssh_from = ["198.18.0.0/24", "2001:db8::/32"]
firewall_extra = ["tcp/8080 from 198.18.0.0/24", "udp/53"]
domain = "www.lab.test"
acme_directory = "https://198.18.0.1:14000/dir"
acme_email = "ops@lab.test"
acme_ca_file = "/etc/bootstrap/acme-ca.pem"
acme_challenge_port = 8402
upstreams = ["198.18.0.30:8080", "[2001:db8::30]:8080"]
health_path = "/healthz"
db_hosts = ["198.18.0.20:5432"]
db_name = "shop"
db_user = "shopper"
acme_challenge = "dns-01"
shared_domain = "shop.lab.test"
admin_node = "app2.lab.test"
admin_paths = ["/admin", "/uploads"]
floating_ip = "198.18.0.100/24"
floating_interface = "eth0"
vrrp_router_id = 51
floating_ip_hook = "/usr/local/bin/move-floating-ip"
release_url = "https://releases.lab.test/bootstrap"
bootstrap_version = "0.1.0"
db_ha = true
db_cluster_name = "shop"
db_synchronous = true
storage_node = "store.lab.test"
shared_volumes = ["uploads", "cache"]
shared_mount = "/srv/share"
swarm_managers = 3
swarm_labels = ["zone=a", "ssd=true"]
swarm_stack = """
version: "3.8"
services:
  web:
    image: lab/web:1
    environment:
      SECRET: "${APP_SECRET}"
"""
swarm_stack_name = "shop"
swarm_stack_env = ["GREETING=hello"]
swarm_stack_secret_env = "APP_SECRET"
swarm_stack_resolve_image = "never"
"#;

const COMBINATIONS: &[&[&str]] =
    &[&["app"], &["db"], &["app", "db"], &["storage"], &["app", "storage"], &["swarm"], &["app", "swarm"]];

fn facts() -> Facts {
    Facts {
        hostname: "node1".into(),
        addresses: vec!["198.18.0.10".into(), "2001:db8::10".into()],
        interfaces: [("198.18.0.10".to_string(), "eth0".to_string())].into(),
        os: Os {
            id: "debian".into(),
            version_id: "12".into(),
            codename: "bookworm".into(),
            pretty_name: "Debian 12".into(),
        },
        postgresql: 15,
        postgresql_main_cluster: false,
        ssh_session: None,
    }
}

fn peers() -> serde_json::Value {
    json!({ "app": [
        { "host": "node1.lab.test.", "name": "node1.lab.test", "address": "198.18.0.10", "port": 443, "priority": 0, "weight": 0 },
        { "host": "app2.lab.test.", "name": "app2.lab.test", "address": "198.18.0.11", "port": 443, "priority": 0, "weight": 0 },
    ], "db": [
        { "host": "db1.lab.test.", "name": "db1.lab.test", "address": "198.18.0.20", "port": 5432, "priority": 0, "weight": 0 },
        { "host": "db2.lab.test.", "name": "db2.lab.test", "address": "2001:db8::21", "port": 5432, "priority": 0, "weight": 0 },
    ], "storage": [
        { "host": "store.lab.test.", "name": "store.lab.test", "address": "198.18.0.40", "port": 22, "priority": 0, "weight": 0,
          "txt": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@store"] },
    ], "sshfs_clients": [
        { "host": "app2.lab.test.", "name": "app2.lab.test", "address": "198.18.0.11", "port": 22, "priority": 0, "weight": 0,
          "txt": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF0000000000000000000000000000000000000000000 app2 shared storage"] },
    ], "swarm_managers": [
        { "host": "sw1.lab.test.", "name": "sw1.lab.test", "address": "198.18.0.50", "port": 2377, "priority": 0, "weight": 0 },
    ], "etcd": [
        { "host": "db1.lab.test.", "name": "db1.lab.test", "address": "198.18.0.20", "port": 2379, "priority": 0, "weight": 0 },
    ] })
}

/// Compile `roles` from `source` with `site`; the templates the states rendered.
fn compile(source: &DirSource, roles: &[&str], site: &str) -> anyhow::Result<Vec<String>> {
    let tree = tempfile::tempdir().unwrap();
    let (mut cx, _) = fake::cx(tree.path(), |_| fake::ok());
    cx.facts = facts();
    cx.secrets.insert("db_password", "canary-db-password".into());
    cx.secrets.insert("vrrp_password", "canaryvr".into());
    for name in ["db_cluster_secret", "db_superuser_password", "db_replication_password", "patroni_api_password"] {
        cx.secrets.insert(name, format!("canary-{name}-0001"));
    }
    cx.secrets.insert("swarm_stack_secret", "canary-stack-secret-0001".into());
    cx.secrets.insert("dns_tsig_key", "q8T0mUQ0m3CHsmp2cC1ItHzMmkzSePWCT7PyBoDGDd8=".into());
    let p = support::compile_roles(source, &mut cx, roles, site, peers())?;
    assert!(!p.nodes.is_empty(), "{roles:?} compiled to no states");
    Ok(p.templates)
}

#[test]
fn every_shipped_role_compiles_alone_and_together_with_and_without_settings() {
    let source = support::shipped_source();
    let mut rendered = BTreeSet::new();
    for roles in COMBINATIONS {
        for (name, site) in [("no settings", ""), ("fleet settings", FLEET)] {
            let used = compile(&source, roles, site).unwrap_or_else(|e| panic!("{roles:?} with {name}: {e:#}"));
            rendered.extend(used);
        }
    }
    // Every template the repository ships was rendered by some combination: none is dead, and
    // none escaped this test.
    let shipped: BTreeSet<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../roles/templates"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(rendered, shipped, "templates never rendered: {:?}", shipped.difference(&rendered).collect::<Vec<_>>());
}

#[test]
fn the_landing_page_escapes_the_site_name() {
    use states::role::template::{Data, Templates};
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../roles/templates/landing.html.hbs"))
            .unwrap();
    let mut t = Templates::new(&Default::default());
    t.add("landing.html.hbs", &text).unwrap();
    let data =
        json!({ "facts": { "hostname": "node1" }, "settings": { "site_name": "<script>alert(1)</script> & Co" } });
    let page = String::from_utf8(t.render("landing.html.hbs", &Data::new(data)).unwrap().bytes).unwrap();
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co") && !page.contains("<script>"), "{page}");
}

/// A copy of the shipped roles with `edit` applied to one file.
fn edited(file: &str, edit: impl Fn(String) -> String) -> (tempfile::TempDir, DirSource) {
    let dir = tempfile::tempdir().unwrap();
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../roles");
    std::fs::create_dir(dir.path().join("templates")).unwrap();
    for sub in ["", "templates"] {
        for e in std::fs::read_dir(from.join(sub)).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                let rel = Path::new(sub).join(e.file_name());
                let mut text = std::fs::read_to_string(e.path()).unwrap();
                if rel == Path::new(file) {
                    text = edit(text);
                }
                std::fs::write(dir.path().join(&rel), text).unwrap();
            }
        }
    }
    let source = DirSource(dir.path().to_path_buf());
    (dir, source)
}

#[test]
fn a_template_naming_missing_data_fails_the_compile() {
    let (_dir, source) = edited("templates/motd.hbs", |t| t + "{{settings.site_nmae}}\n");
    let e = format!("{:#}", compile(&source, &["app"], "").unwrap_err());
    assert!(e.contains("motd.hbs") && e.contains("site_nmae"), "{e}");
    let (_dir, source) =
        edited("templates/haproxy.cfg.hbs", |t| t.replace("{{#each peers.db}}", "{{#each peers.dbs}}"));
    let e = format!("{:#}", compile(&source, &["app"], FLEET).unwrap_err());
    assert!(e.contains("haproxy.cfg.hbs"), "{e}");
}

#[test]
fn a_typo_in_a_shipped_role_fails_the_compile_with_its_line() {
    let (_dir, source) = edited("db.toml", |t| t.replacen("type = \"pg_database\"", "type = \"pg_databse\"", 1));
    let e = format!("{:#}", compile(&source, &["db"], "").unwrap_err());
    assert!(e.contains("db.toml, line") && e.contains("unknown state type `pg_databse`"), "{e}");
}
