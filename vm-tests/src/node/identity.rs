//! Who a node is: hostname, address, resolver and machine-id, written into its tree.

use super::Node;
use crate::network::{HOST_ADDR, PREFIX_LEN};
use std::fs;

impl Node {
    /// Before the first boot: systemd-networkd inside gives host0 the lab address, and
    /// everything resolves through knot on the lab host.
    pub(super) fn write_identity(&self) {
        self.put_file("etc/hostname", format!("{}\n", self.name).as_bytes(), 0o644);
        self.put_file(
            "etc/hosts",
            format!(
                "127.0.0.1\tlocalhost\n{}\t{}\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n",
                self.addr, self.name
            )
            .as_bytes(),
            0o644,
        );
        self.put_file(
            "etc/systemd/network/10-host0.network",
            format!(
                "[Match]\nName=host0\n\n[Network]\nAddress={}/{PREFIX_LEN}\nGateway={HOST_ADDR}\nDNS={HOST_ADDR}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n",
                self.addr
            )
            .as_bytes(),
            0o644,
        );
        self.put_file("etc/resolv.conf", format!("nameserver {HOST_ADDR}\n").as_bytes(), 0o644);
        // A machine-id of its own, stable across reboots (journald, D-Bus and DHCP use it).
        let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
        self.put_file("etc/machine-id", format!("{}\n", uuid.trim().replace('-', "")).as_bytes(), 0o444);
    }
}
