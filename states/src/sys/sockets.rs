//! This host's TCP sockets as the kernel lists them in `/proc/net/tcp{,6}`, and which of them
//! a process holds: what sshd really listens on, and whether an SSH session is still live.
//! Files only, no `ss` child: the firewall's plan asks this on every run.

use std::collections::HashSet;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::engine::context::Context;

/// The kernel's TCP states, as `/proc/net/tcp` prints them.
pub const ESTABLISHED: u8 = 0x01;
pub const LISTEN: u8 = 0x0A;

/// One TCP socket: an IPv4 peer of a dual-stack socket shows as plain IPv4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    pub inode: u64,
}

/// Every TCP socket of the host, IPv4 then IPv6.
pub fn sockets(cx: &Context) -> Vec<Socket> {
    read(cx, |_| true)
}

/// The host's listening TCP sockets only: the other lines (a busy proxy's thousands of
/// connections) are skipped before their addresses are decoded.
pub fn listeners(cx: &Context) -> Vec<Socket> {
    read(cx, |state| state == LISTEN)
}

fn read(cx: &Context, keep: impl Fn(u8) -> bool) -> Vec<Socket> {
    let mut out = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let text = fs::read_to_string(cx.path(file)).unwrap_or_default();
        for line in text.lines().skip(1) {
            let state = line.split_whitespace().nth(3).and_then(|st| u8::from_str_radix(st, 16).ok());
            if state.is_some_and(&keep) {
                out.extend(parse_line(line, v6));
            }
        }
    }
    out
}

/// `sl local remote st tx:rx tr:when retrnsmt uid timeout inode …`
fn parse_line(line: &str, v6: bool) -> Option<Socket> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let addr = |s: &str| {
        let (a, p) = s.split_once(':')?;
        Some(SocketAddr::new(unmap(proc_addr(a, v6)?), u16::from_str_radix(p, 16).ok()?))
    };
    Some(Socket {
        local: addr(f.get(1)?)?,
        remote: addr(f.get(2)?)?,
        state: u8::from_str_radix(f.get(3)?, 16).ok()?,
        inode: f.get(9)?.parse().ok()?,
    })
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
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

/// The socket inodes held open by the processes whose command name is `comm` and whose
/// parent's is not: a daemon's listener, not the children it forks per connection (bookworm's
/// per-session sshd is also `sshd`, and holds what a session forwards: X11's 6010, `-R`).
/// Only under the live root: another tree's processes aren't ours.
pub fn inodes_of(cx: &Context, comm: &str) -> HashSet<u64> {
    let mut out = HashSet::new();
    if !cx.is_live() {
        return out;
    }
    let Ok(procs) = fs::read_dir("/proc") else { return out };
    // (pid, parent, command name) of every process, from one read of its `stat` each.
    let table: Vec<(u32, u32, String)> = procs
        .flatten()
        .filter_map(|p| p.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, tail) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_string();
            let ppid = tail.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid, name))
        })
        .collect();
    let name_of = |pid: u32| table.iter().find(|(p, _, _)| *p == pid).map(|(_, _, n)| n.as_str());
    for (pid, ppid, name) in &table {
        if name != comm || name_of(*ppid) == Some(comm) {
            continue;
        }
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else { continue };
            let target = target.to_string_lossy();
            if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
                out.extend(inode.parse::<u64>().ok());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_proc_net_lines() {
        if cfg!(target_endian = "little") {
            let l = "   0: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0";
            let s = parse_line(l, false).unwrap();
            assert_eq!((s.local, s.state, s.inode), ("127.0.0.1:22".parse().unwrap(), LISTEN, 12345));
            let mapped =
                "0: 0000000000000000FFFF00000A00000A:0016 0000000000000000FFFF00000B00000A:D431 01 0:0 0:0 0 0 0 777 1";
            let s = parse_line(mapped, true).unwrap();
            assert_eq!((s.local, s.remote), ("10.0.0.10:22".parse().unwrap(), "10.0.0.11:54321".parse().unwrap()));
            assert_eq!(proc_addr("00000000000000000000000001000000", true), Some("::1".parse().unwrap()));
        }
        assert_eq!(proc_addr("00000000", false), Some("0.0.0.0".parse().unwrap()));
        assert!(parse_line("  sl  local_address rem_address   st", false).is_none());
    }
}
