//! Where sshd listens, so the firewall never closes the door the operator came in by.
//!
//! Ports come from sshd's configuration as Debian lays it out: `/etc/ssh/sshd_config` and
//! `/etc/ssh/sshd_config.d/*.conf` (the `Include` Debian ships). Every `Port` counts (sshd
//! listens on all of them), as does an explicit port in `ListenAddress host:port`; with none,
//! 22. Reading files instead of running `sshd -T` keeps a no-op run free of child processes,
//! and works when sshd is not installed (22 is still kept open: the host may get sshd later).
//! Over-approximating is the safe side: an extra open port beats a lockout.

use std::fs;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{anyhow, Context as _, Result};

use crate::engine::context::Context;

pub const DEFAULT: u16 = 22;

/// The TCP ports sshd is configured to listen on, sorted, never empty.
pub fn ports(cx: &Context) -> Result<Vec<u16>> {
    let mut files = vec![cx.path("/etc/ssh/sshd_config")];
    if let Ok(dir) = fs::read_dir(cx.path("/etc/ssh/sshd_config.d")) {
        let mut confs: Vec<_> =
            dir.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "conf")).collect();
        confs.sort();
        files.extend(confs);
    }
    let mut ports = Vec::new();
    for f in files {
        let text = match fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", f.display())),
        };
        ports.extend(parse(&text).with_context(|| format!("in {}", f.display()))?);
    }
    if ports.is_empty() {
        ports.push(DEFAULT);
    }
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

/// Ports named by one configuration file.
pub fn parse(text: &str) -> Result<Vec<u16>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        // sshd accepts `Keyword value` and `Keyword=value`.
        let mut words = line.splitn(2, |c: char| c.is_whitespace() || c == '=');
        let key = words.next().unwrap_or("").to_ascii_lowercase();
        let value = words.next().unwrap_or("").trim_start_matches(|c: char| c.is_whitespace() || c == '=');
        let value = value.split_whitespace().next().unwrap_or("");
        match key.as_str() {
            // `Port` is not allowed inside a Match block, so nothing after one matters.
            "match" => break,
            "port" => out.push(port(value)?),
            "listenaddress" => {
                let tail = match value.strip_prefix('[') {
                    Some(v6) => v6.split_once("]:").map(|(_, p)| p),
                    None => value.split_once(':').filter(|(_, p)| !p.contains(':')).map(|(_, p)| p),
                };
                if let Some(p) = tail {
                    out.push(port(p)?);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn port(s: &str) -> Result<u16> {
    s.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| anyhow!("`{s}` is not a port sshd could listen on"))
}

/// An address sshd listens on for `port` right now (the wildcard as loopback), from
/// `/proc/net/tcp{,6}`; `None` when nothing listens there.
pub fn listening(cx: &Context, port: u16) -> Option<SocketAddr> {
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let text = fs::read_to_string(cx.path(file)).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Field 3 is the socket state; 0A is LISTEN.
            let (Some(local), Some(&"0A")) = (f.get(1), f.get(3)) else { continue };
            let Some((addr, p)) = local.split_once(':') else { continue };
            if u16::from_str_radix(p, 16).ok() != Some(port) {
                continue;
            }
            if let Some(ip) = proc_addr(addr, v6) {
                let ip = match ip {
                    IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                    other => other,
                };
                return Some(SocketAddr::new(ip, port));
            }
        }
    }
    None
}

/// `/proc/net/tcp*` prints addresses as 32-bit words in host byte order.
fn proc_addr(hex: &str, v6: bool) -> Option<IpAddr> {
    let words: Vec<[u8; 4]> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok().map(u32::to_ne_bytes))
        .collect::<Option<_>>()?;
    match (v6, words.as_slice()) {
        (false, [w]) => Some(IpAddr::V4(Ipv4Addr::from(*w))),
        (true, [a, b, c, d]) => {
            let bytes: Vec<u8> = [a, b, c, d].iter().flat_map(|w| w.iter().copied()).collect();
            Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ports_the_way_sshd_does() {
        let conf = "Include /etc/ssh/sshd_config.d/*.conf\n#Port 22\nPort 2222\n  port=2200\n\
                    ListenAddress 10.0.0.1:2022\nListenAddress [::1]:2023\nListenAddress ::\n\
                    ListenAddress 10.0.0.2\nMatch User x\n  Port 1\n";
        assert_eq!(parse(conf).unwrap(), [2222, 2200, 2022, 2023]);
        assert!(parse("Port 70000\n").unwrap_err().to_string().contains("70000"));
        assert!(parse("# nothing\n").unwrap().is_empty());
    }

    #[test]
    fn decodes_proc_net_addresses() {
        if cfg!(target_endian = "little") {
            assert_eq!(proc_addr("0100007F", false), Some("127.0.0.1".parse().unwrap()));
            assert_eq!(proc_addr("00000000000000000000000001000000", true), Some("::1".parse().unwrap()));
        }
        assert_eq!(proc_addr("00000000", false), Some("0.0.0.0".parse().unwrap()));
    }
}
