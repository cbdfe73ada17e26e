//! Cleanup helpers shared by the Drop impls. They never panic (a panic while unwinding from a
//! failed test would abort and hide the real failure), they only touch what this library made,
//! and processes are ended one by one through the handles of the children we started.

use std::fs;
use std::path::Path;
use std::process::Command;

/// `rm -rf --one-file-system DIR`, refusing anything outside our scratch and cache roots.
/// `--one-file-system` guards against deleting through a bind mount that survived somehow.
pub fn remove_tree(dir: &Path) {
    let allowed = [crate::places::scratch_root(), crate::places::cache_root()];
    if !allowed.iter().any(|root| dir.starts_with(root) && dir != root.as_path()) {
        eprintln!("[vm-tests] refusing to remove {} (outside the vm-tests directories)", dir.display());
        return;
    }
    if !dir.exists() {
        return;
    }
    match Command::new("rm").args(["-rf", "--one-file-system"]).arg(dir).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!("[vm-tests] rm -rf {} failed: {}", dir.display(), String::from_utf8_lossy(&o.stderr)),
        Err(e) => eprintln!("[vm-tests] rm -rf {} failed: {e}", dir.display()),
    }
}

/// Warns about labs left by test processes that no longer exist (killed with SIGKILL, so their
/// Drop never ran) and removes their namespace and scratch directory when nothing runs in them
/// any more. Processes are never killed here: we did not start them in this process.
pub fn report_stale_labs() {
    let scratch = crate::places::scratch_root();
    let mut names: Vec<String> = Vec::new();
    for dir in [Path::new("/run/netns"), scratch.as_path()] {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    for name in names {
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue; // a live test process owns it
        }
        let netns = Path::new("/run/netns").join(&name);
        let users = if netns.exists() { processes_in_netns(&netns) } else { Vec::new() };
        if users.is_empty() {
            eprintln!("[vm-tests] removing stale lab {name} (its test process {pid} is gone)");
            if netns.exists() {
                let _ = crate::cmd::host("ip").args(["netns", "delete", &name]).output();
            }
            remove_tree(&scratch.join(&name));
            crate::cgroup::remove_lab(&name);
        } else {
            eprintln!(
                "[vm-tests] WARNING: stale lab {name} (test process {pid} is gone) still has processes {users:?}; \
                 stop them and run `ip netns delete {name}`"
            );
        }
    }
}

/// `bvt-<slug>-<pid>-<n>` → pid.
fn owner_pid(netns: &str) -> Option<u32> {
    let rest = netns.strip_prefix("bvt-")?;
    let mut parts = rest.rsplitn(3, '-');
    let _n = parts.next()?;
    parts.next()?.parse().ok()
}

fn processes_in_netns(ns: &Path) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = fs::metadata(ns) else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(m) = fs::metadata(format!("/proc/{pid}/ns/net")) {
            if m.ino() == target.ino() && m.dev() == target.dev() {
                pids.push(pid);
            }
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    #[test]
    fn owner_pid_parses_lab_names_only() {
        assert_eq!(super::owner_pid("bvt-lab-smoke-4323-0"), Some(4323));
        assert_eq!(super::owner_pid("bvt-x-1-12"), Some(1));
        assert_eq!(super::owner_pid("bvt-probe-77"), None);
        assert_eq!(super::owner_pid("other-1-2"), None);
    }
}
