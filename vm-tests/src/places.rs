//! Where the lab keeps things on the host: the cache of slow artefacts and the scratch trees of
//! running labs. Cleanup refuses to remove anything outside these.

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

/// `$BOOTSTRAP_VM_CACHE` or `/var/cache/bootstrap-vm-tests`.
pub fn cache_root() -> PathBuf {
    std::env::var_os("BOOTSTRAP_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/bootstrap-vm-tests"))
}

/// Where per-lab scratch data lives (container trees, configs, logs); removed with the lab.
///
/// `$BOOTSTRAP_VM_SCRATCH`, else `/dev/shm/bootstrap-vm-tests` when /dev/shm is a tmpfs
/// mounted without nosuid/nodev/noexec (copying the 220 MB base image there takes ~0.5 s
/// instead of ~6 s on the build machines' ext4, and dpkg/PostgreSQL fsyncs become free), else
/// `/var/tmp/bootstrap-vm-tests`.
pub fn scratch_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        if let Some(p) = std::env::var_os("BOOTSTRAP_VM_SCRATCH") {
            return PathBuf::from(p);
        }
        let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
        let shm_ok = mounts.lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.len() > 3
                && f[1] == "/dev/shm"
                && f[2] == "tmpfs"
                && !f[3].split(',').any(|o| matches!(o, "nosuid" | "nodev" | "noexec" | "ro"))
        });
        PathBuf::from(if shm_ok { "/dev/shm" } else { "/var/tmp" }).join("bootstrap-vm-tests")
    })
    .clone()
}
