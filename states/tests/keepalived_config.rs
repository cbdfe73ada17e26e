//! The embedded keepalived template, rendered for a lone node and for fleets of app nodes,
//! checked by the role's own validator (the real `keepalived --config-test`), and the
//! validator refusing broken files. Runs as root (an interface in a namespace of its own).

use std::process::Command;

use serde_json::{json, Value};
use states::engine::facts::Facts;
use states::engine::secrets::Secrets;
use states::pipeline::data::{NodeData, Schedule, TemplateData};
use states::role::template::{Data, Templates};

const TEMPLATE: &str = include_str!("../../roles/templates/keepalived.conf.hbs");
const ROLE: &str = include_str!("../../roles/app.toml");
/// A dummy interface in a network namespace of the test's own (a veth: keepalived refuses loopback).
const IFACE: &str = "vk0";

/// The `validate` command of the role's keepalived-config state.
fn validator() -> Vec<String> {
    let role: toml::Table = toml::from_str(ROLE).unwrap();
    let state =
        role["state"].as_array().unwrap().iter().find(|s| s["id"].as_str() == Some("keepalived-config")).unwrap();
    state["validate"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

fn peers(n: usize) -> Value {
    Value::Array((0..n).map(|i| json!({ "host": format!("app{i}.lab.test."), "name": format!("app{i}.lab.test"), "address": format!("198.18.0.{}", 10 + i), "port": 443 })).collect())
}

fn render(settings: Value, n: usize) -> String {
    let mut secrets = Secrets::default();
    secrets.insert("vrrp_password", "canaryvr".into());
    let mut t = Templates::new(&secrets);
    t.add("keepalived.conf.hbs", TEMPLATE).unwrap();
    let data = TemplateData {
        facts: Facts { hostname: "app0".into(), ..Default::default() },
        settings,
        roles: vec!["app".into()],
        schedule: Schedule { cron: "*/15 * * * *".into() },
        node: NodeData {
            private_address: Some("198.18.0.10".into()),
            private_address_type: Some("A"),
            private_interface: Some(IFACE.into()),
            vrrp_priority: 10,
            authoritative: None,
            drained: false,
        },
        role: [("app".to_string(), true)].into(),
        peers: json!({ "app": peers(n) }),
        firewall: Vec::new(),
    }
    .to_value();
    String::from_utf8(t.render("keepalived.conf.hbs", &Data::new(data)).unwrap().bytes).unwrap()
}

/// Run the role's validator on `text` (its script user made one the host has).
fn validate(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keepalived.conf");
    std::fs::write(&file, text.replace("script_user keepalived_script", "script_user nobody")).unwrap();
    let argv: Vec<String> = validator().into_iter().map(|a| a.replace("{}", file.to_str().unwrap())).collect();
    let setup = format!("ip link add {IFACE} type veth peer name {IFACE}p && ip link set {IFACE} up && exec \"$@\"");
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &setup, "in-netns"])
        .args(&argv)
        .output()
        .expect("unshare (util-linux), as root");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn settings() -> Value {
    json!({ "floating_ip": "198.18.0.100/24", "vrrp_router_id": 51, "floating_interface": null, "floating_ip_hook": null })
}

#[test]
fn rendered_configurations_pass_keepalived_config_test() {
    for n in [0, 1, 2, 3, 10] {
        let text = render(settings(), n);
        let (ok, why) = validate(&text);
        assert!(ok, "{n} app peers: keepalived rejects:\n{text}\n{why}");
        // The node itself is never its own peer; a lone node has no unicast block at all.
        assert!(!text.contains("        198.18.0.10\n"), "{text}");
        assert_eq!(text.contains("unicast_peer"), n > 1, "{n} peers:\n{text}");
    }
    let mut s = settings();
    s["floating_ip_hook"] = json!("/usr/bin/true");
    s["floating_interface"] = json!(IFACE);
    let text = render(s, 3);
    assert!(text.contains("notify_master \"/usr/bin/true\"") && text.contains("interface vk0"), "{text}");
    assert!(validate(&text).0, "{text}");
}

#[test]
fn the_validator_refuses_what_keepalived_complains_about() {
    let good = render(settings(), 3);
    for (what, bad) in [
        ("unknown keyword", good.replace("advert_int 1", "advert_int 1\n    bogus_keyword 3")),
        ("router id out of range", good.replace("virtual_router_id 51", "virtual_router_id 999")),
        ("no such interface", good.replace("interface vk0", "interface nosuch0")),
        ("invalid address", good.replace("198.18.0.100/24", "198.18.0.300/24")),
    ] {
        let (ok, why) = validate(&bad);
        assert!(!ok, "{what}: the validator accepted:\n{bad}");
        assert!(!why.trim().is_empty(), "{what}: refused without a word");
        assert!(!why.contains("canaryvr"), "{what}: the validator's message shows the VRRP password");
    }
}
