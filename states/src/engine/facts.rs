//! Facts about the node, gathered once per run without child processes.

use std::path::Path;

use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Facts {
    pub hostname: String,
    /// Non-loopback addresses, IPv4 first.
    pub addresses: Vec<String>,
    /// The interface each of `addresses` is on.
    pub interfaces: std::collections::BTreeMap<String, String>,
    pub os: Os,
    /// The major version of the distribution's PostgreSQL (its paths: /etc/postgresql/N/main).
    pub postgresql: u32,
    /// Debian's own `main` cluster of that version exists (`/etc/postgresql/N/main`): a db
    /// node Patroni takes over rather than initialises.
    pub postgresql_main_cluster: bool,
    /// The SSH session this run was started from (`SSH_CONNECTION`), if any: the firewall must
    /// not shut it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_session: Option<SshSession>,
}

/// Where an SSH session comes from and the port it came in on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SshSession {
    pub client: std::net::IpAddr,
    pub port: u16,
    /// The other half of the connection, to tell a live session from a stale variable (a tmux
    /// or screen session keeps the one it was started in).
    pub client_port: u16,
    pub server: std::net::IpAddr,
}

impl SshSession {
    /// The session this process runs in: `SSH_CONNECTION` here or, when `sudo` or `su` dropped
    /// it, in the nearest parent process that has it.
    pub fn of_this_process() -> Option<SshSession> {
        if let Ok(v) = std::env::var("SSH_CONNECTION") {
            return SshSession::parse(&v);
        }
        let mut pid = std::os::unix::process::parent_id();
        for _ in 0..16 {
            if pid <= 1 {
                return None;
            }
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let found = environ.split(|b| *b == 0).find_map(|kv| kv.strip_prefix(b"SSH_CONNECTION="));
            if let Some(v) = found {
                return SshSession::parse(&String::from_utf8_lossy(v));
            }
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The parent pid is the second field after the command name's closing parenthesis.
            pid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0);
        }
        None
    }

    /// From `SSH_CONNECTION` (`client_ip client_port server_ip server_port`).
    pub fn parse(text: &str) -> Option<SshSession> {
        let f: Vec<&str> = text.split_whitespace().collect();
        let [client, client_port, server, port] = f[..] else { return None };
        // An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d.
        let unmap = |ip: std::net::IpAddr| match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        };
        // A link-local address may carry its zone (`fe80::1%eth0`).
        let ip = |s: &str| s.split('%').next().unwrap_or(s).parse().ok().map(unmap);
        Some(SshSession {
            client: ip(client)?,
            port: port.parse().ok()?,
            client_port: client_port.parse().ok()?,
            server: ip(server)?,
        })
    }
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
        let hostname = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
        let os = Os::read(root);
        let (addresses, interfaces) = addresses();
        let postgresql = os.postgresql_major();
        let postgresql_main_cluster = root.join(format!("etc/postgresql/{postgresql}/main/postgresql.conf")).is_file();
        let ssh_session = SshSession::of_this_process();
        Facts { hostname, addresses, interfaces, postgresql, postgresql_main_cluster, os, ssh_session }
    }
}

/// The addresses, and the interface of each.
fn addresses() -> (Vec<String>, std::collections::BTreeMap<String, String>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut on = std::collections::BTreeMap::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(sa) = a.address else { continue };
            let ip = if let Some(s) = sa.as_sockaddr_in() {
                let ip = s.ip();
                if ip.is_loopback() {
                    continue;
                }
                v4.push(ip.to_string());
                ip.to_string()
            } else if let Some(s) = sa.as_sockaddr_in6() {
                let ip = s.ip();
                // Link-local addresses are useless to peers.
                if ip.is_loopback() || (ip.segments()[0] & 0xffc0) == 0xfe80 {
                    continue;
                }
                v6.push(ip.to_string());
                ip.to_string()
            } else {
                continue;
            };
            on.entry(ip).or_insert(a.interface_name);
        }
    }
    v4.append(&mut v6);
    v4.dedup();
    (v4, on)
}

impl Os {
    fn read(root: &Path) -> Os {
        let text = std::fs::read_to_string(root.join("etc/os-release"))
            .or_else(|_| std::fs::read_to_string("/etc/os-release"))
            .unwrap_or_default();
        Os::parse(&text)
    }

    /// The PostgreSQL the distribution ships (what `apt-get install postgresql` gives).
    pub fn postgresql_major(&self) -> u32 {
        match (self.id.as_str(), self.version_id.as_str()) {
            ("ubuntu", v) if v.starts_with("22.") => 14,
            ("ubuntu", v) if v.starts_with("24.") => 16,
            ("debian", "13") => 17,
            _ => 15,
        }
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
        let os = Os::parse(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n",
        );
        assert_eq!((os.id.as_str(), os.version_id.as_str(), os.codename.as_str()), ("debian", "12", "bookworm"));
        assert_eq!(os.postgresql_major(), 15);
        assert_eq!(Os::parse("ID=ubuntu\nVERSION_ID=\"22.04\"\n").postgresql_major(), 14);
        assert_eq!(Os::parse("ID=ubuntu\nVERSION_ID=\"24.04\"\n").postgresql_major(), 16);
    }
}
