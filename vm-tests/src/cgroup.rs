//! One private cgroup per container.
//!
//! With `--keep-unit` on a host whose PID 1 is not systemd, systemd-nspawn puts the container
//! under `<own cgroup>/payload`. Two containers started from the same cgroup would then share
//! `/payload/system.slice/cron.service` etc., and one container stopping a unit could kill the
//! other's processes. So every nspawn is started inside its own cgroup, in every hierarchy
//! systemd uses (cgroup v2, and the v1 `name=systemd` one on hybrid hosts).

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = "bootstrap-vm-tests";

pub struct Cgroup {
    dirs: Vec<PathBuf>,
    procs: Vec<CString>,
}

impl Cgroup {
    /// Creates `bootstrap-vm-tests/<lab>/<node>` under each systemd-relevant cgroup mount.
    pub fn create(lab: &str, node: &str) -> Cgroup {
        let dirs: Vec<PathBuf> = systemd_cgroup_mounts().iter().map(|m| m.join(ROOT).join(lab).join(node)).collect();
        let procs = dirs.iter().map(|d| CString::new(d.join("cgroup.procs").to_str().unwrap()).unwrap()).collect();
        Cgroup { dirs, procs }
    }

    /// Creates the directories (again after `remove`, for a reboot).
    pub fn ensure(&self) {
        for dir in &self.dirs {
            fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", dir.display()));
        }
    }

    /// A closure for `Command::pre_exec` that moves the forked child into this cgroup before
    /// it execs. Only async-signal-safe calls after the fork: the paths are allocated here.
    pub fn enter_fn(&self) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
        let procs = self.procs.clone();
        move || {
            for p in &procs {
                // SAFETY: open/write/close on a valid C string; writing "0" moves the writer.
                unsafe {
                    let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                    let err = std::io::Error::last_os_error();
                    libc::close(fd);
                    if !ok {
                        return Err(err);
                    }
                }
            }
            Ok(())
        }
    }

    /// Removes the (empty by now) cgroup trees nspawn and the container's systemd created.
    /// Never panics: it runs from Drop.
    pub fn remove(&self) {
        for d in &self.dirs {
            remove_cgroup_tree(d);
        }
    }
}

/// Removes what is left of a lab's cgroups (called when the lab goes away).
pub fn remove_lab(lab: &str) {
    for mount in systemd_cgroup_mounts() {
        let dir = mount.join(ROOT).join(lab);
        if dir.exists() {
            remove_cgroup_tree(&dir);
        }
    }
}

/// The v1 controllers a nested dockerd writes to (`NodeBuilder::docker`).
pub const DOCKER_CONTROLLERS: &[&str] = &["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids"];

/// A dockerd in a container sees the host's v1 hierarchies and makes `/sys/fs/cgroup/<ctrl>/docker`
/// there: removed once its containers are gone (a group still in use by another lab stays).
pub fn remove_docker() {
    for ctrl in DOCKER_CONTROLLERS {
        let dir = Path::new("/sys/fs/cgroup").join(ctrl).join("docker");
        if dir.exists() {
            remove_cgroup_tree(&dir);
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    // cgroupfs only allows rmdir of empty groups, children first; files inside are virtual.
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    if let Err(e) = fs::remove_dir(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            eprintln!("[vm-tests] cannot remove cgroup {}: {e}", dir.display());
        }
    }
}

/// The cgroup2 mount and, on hybrid/legacy hosts, the v1 `name=systemd` mount.
fn systemd_cgroup_mounts() -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for line in info.lines() {
        // "... mountpoint opts - fstype source superopts"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mountpoint = left.split(' ').nth(4).unwrap_or("");
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or("");
        let superopts = r.nth(1).unwrap_or("");
        let systemd_v1 = fstype == "cgroup" && superopts.split(',').any(|o| o == "name=systemd");
        if fstype == "cgroup2" || systemd_v1 {
            let p = PathBuf::from(mountpoint);
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}
