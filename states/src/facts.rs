//! Facts about the node, gathered once per run without child processes.

use std::path::Path;

use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Facts {
    pub hostname: String,
    /// Non-loopback addresses, IPv4 first.
    pub addresses: Vec<String>,
    pub os: Os,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Os {
    pub id: String,
    pub version_id: String,
    pub codename: String,
    pub pretty_name: String,
}

impl Facts {
    /// Facts of this machine; the OS is read from `root`'s os-release when it has one.
    pub fn gather(root: &Path) -> Facts {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        Facts { hostname, addresses: addresses(), os: Os::read(root) }
    }
}

fn addresses() -> Vec<String> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(sa) = a.address else { continue };
            if let Some(s) = sa.as_sockaddr_in() {
                let ip = s.ip();
                if !ip.is_loopback() {
                    v4.push(ip.to_string());
                }
            } else if let Some(s) = sa.as_sockaddr_in6() {
                let ip = s.ip();
                // Link-local addresses are useless to peers.
                if !ip.is_loopback() && (ip.segments()[0] & 0xffc0) != 0xfe80 {
                    v6.push(ip.to_string());
                }
            }
        }
    }
    v4.append(&mut v6);
    v4.dedup();
    v4
}

impl Os {
    fn read(root: &Path) -> Os {
        let text = std::fs::read_to_string(root.join("etc/os-release"))
            .or_else(|_| std::fs::read_to_string("/etc/os-release"))
            .unwrap_or_default();
        Os::parse(&text)
    }

    pub fn parse(text: &str) -> Os {
        let mut os = Os::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else { continue };
            let v = v.trim().trim_matches('"').to_string();
            match k.trim() {
                "ID" => os.id = v,
                "VERSION_ID" => os.version_id = v,
                "VERSION_CODENAME" => os.codename = v,
                "PRETTY_NAME" => os.pretty_name = v,
                _ => {}
            }
        }
        os
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_os_release() {
        let os = Os::parse("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n");
        assert_eq!((os.id.as_str(), os.version_id.as_str(), os.codename.as_str()), ("debian", "12", "bookworm"));
    }
}
