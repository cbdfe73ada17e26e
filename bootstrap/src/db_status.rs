//! The database cluster in `bootstrap status` on a db node with `db_ha`: its members as this
//! node's Patroni sees them (leader, replicas, state, timeline, lag). Patroni's REST address is
//! read from its configuration (written by the db role as JSON).

use std::path::Path;

use states::engine::layout::Layout;
use states::sys::patroni;

/// Lines to print, or none when this node runs no Patroni of ours.
pub fn lines(root: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(Layout::new(root).path("/etc/patroni/config.yml")) else {
        return Vec::new();
    };
    let Some(api) = api_of(&text) else { return Vec::new() };
    let members = patroni::client().and_then(|c| patroni::cluster(&c, &api));
    match members {
        Err(e) => vec![format!("cluster:  Patroni at {api} does not answer: {e:#}")],
        Ok(ms) => {
            let mut out = vec![format!("cluster:  {} member(s), through {api}", ms.len())];
            for m in ms {
                let tl = m.timeline.map_or(String::new(), |t| format!(", timeline {t}"));
                let lag = m.lag.map_or(String::new(), |l| format!(", lag {l} bytes"));
                out.push(format!("  {} ({}): {}, {}{tl}{lag}", m.name, m.host, m.role, m.state));
            }
            out
        }
    }
}

/// `http://HOST:PORT` of the REST API from the configuration (comment lines first, then JSON).
fn api_of(text: &str) -> Option<String> {
    let json: String = text.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
    let v: serde_json::Value = serde_json::from_str(&json).ok()?;
    v["restapi"]["connect_address"].as_str().map(|a| format!("http://{a}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_rest_address_and_no_secret() {
        let cfg = "# header\n{ \"restapi\": { \"connect_address\": \"198.18.0.10:8008\", \"authentication\": {\"password\": \"x\"} } }\n";
        assert_eq!(super::api_of(cfg).as_deref(), Some("http://198.18.0.10:8008"));
        assert_eq!(super::api_of("scope: yaml\n"), None);
    }
}
