//! Before a first install touches anything: root, a supported OS, systemd as PID 1, free disk.

use std::path::Path;

use anyhow::{bail, Result};
use states::engine::facts::Os;

/// Free space a node needs for packages, PostgreSQL and backups.
const MIN_FREE_BYTES: u64 = 1 << 30;

pub fn check(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    if root == Path::new("/") {
        if !nix::unistd::Uid::effective().is_root() {
            problems.push("run as root (e.g. `sudo ./bootstrap app`)".to_string());
        }
        if !Path::new("/run/systemd/system").exists() {
            problems.push("systemd is not running as PID 1; bootstrap manages services through systemd".to_string());
        }
        let os = Os::parse(&std::fs::read_to_string("/etc/os-release").unwrap_or_default());
        if let Err(e) = supported(&os) {
            problems.push(e.to_string());
        }
    }
    match nix::sys::statvfs::statvfs(root) {
        Ok(s) => {
            let free = s.blocks_available() * s.fragment_size();
            if free < MIN_FREE_BYTES {
                problems.push(format!("only {} MiB free on {}; at least 1024 MiB needed", free >> 20, root.display()));
            }
        }
        Err(e) => problems.push(format!("cannot read free space of {}: {e}", root.display())),
    }
    if !problems.is_empty() {
        bail!("this machine can't be bootstrapped yet:\n  - {}", problems.join("\n  - "));
    }
    Ok(())
}

/// Debian 12 or later, Ubuntu 22.04 or later.
pub fn supported(os: &Os) -> Result<()> {
    let major: u32 = os.version_id.split('.').next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let ok = match os.id.as_str() {
        "debian" => major >= 12,
        "ubuntu" => major >= 22,
        _ => false,
    };
    if !ok {
        let name = if os.pretty_name.is_empty() { "an unknown system" } else { os.pretty_name.as_str() };
        bail!("{name} is not supported (Debian 12+ or Ubuntu 22.04+)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_systems() {
        let os = |id: &str, v: &str| Os { id: id.into(), version_id: v.into(), ..Default::default() };
        assert!(supported(&os("debian", "12")).is_ok());
        assert!(supported(&os("debian", "13")).is_ok());
        assert!(supported(&os("ubuntu", "22.04")).is_ok());
        assert!(supported(&os("debian", "11")).is_err());
        assert!(supported(&os("ubuntu", "20.04")).is_err());
        assert!(supported(&os("fedora", "40")).is_err());
    }
}
