//! apt and dpkg (Debian and derivatives): the installed set from `/var/lib/dpkg/status`,
//! changes through `apt-get`, the index refreshed only when it is missing or stale.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::engine::context::Context;
use crate::engine::runner::{Cmd, Output};
use crate::sys::dpkg_status::DpkgStatus;
use crate::sys::package_manager::PackageManager;

pub const STATUS_FILE: &str = "/var/lib/dpkg/status";
pub const LISTS_DIR: &str = "/var/lib/apt/lists";
/// How long to wait for a dpkg lock held by another process (an operator's apt, unattended
/// upgrades) before giving up with a clear error: apt itself waits (`DPkg::Lock::Timeout`).
pub const LOCK_WAIT: Duration = Duration::from_secs(120);
const INSTALL_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const UPDATE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// What apt says when the index doesn't know a package or points at files the mirror no
/// longer has: an `apt-get update` fixes both.
const STALE_INDEX: &[&str] = &["Unable to locate package", "has no installation candidate", "Failed to fetch"];

pub struct Apt;

impl Apt {
    /// The dpkg database, read once per run and shared by every `packages` state.
    pub fn status(cx: &Context) -> Result<Arc<DpkgStatus>> {
        cx.shared.observe(|| DpkgStatus::read(&cx.path(STATUS_FILE)))
    }

    /// True when `apt-get update` has fetched at least one package index (a fresh debootstrap
    /// or a cleaned image has none, and every install would fail with "Unable to locate").
    pub fn has_index(cx: &Context) -> bool {
        std::fs::read_dir(cx.path(LISTS_DIR))
            .is_ok_and(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().contains("_Packages")))
    }

    fn update(cx: &Context) -> Result<()> {
        let cmd = apt_get(["update"]).timeout(UPDATE_TIMEOUT + LOCK_WAIT);
        let out = cx.runner.run(&cmd)?;
        if !out.success() {
            return Err(failure(&cmd, &out));
        }
        Ok(())
    }

    fn install_once(cx: &Context, names: &[String], mut updated: bool) -> Result<()> {
        if !updated && !Apt::has_index(cx) {
            Apt::update(cx)?;
            updated = true;
        }
        let cmd = apt_get([
            "install",
            "-y",
            "--no-install-recommends",
            // A configuration file we manage must never stop an install with a prompt: keep ours.
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
        ])
        .args(names.iter().cloned())
        .timeout(INSTALL_TIMEOUT + LOCK_WAIT);
        let out = cx.runner.run(&cmd)?;
        if out.success() {
            return Ok(());
        }
        let said = format!("{}\n{}", out.stdout, out.stderr);
        // A run killed during an install (its apt-get ended with it) leaves packages unpacked
        // but not configured; dpkg finishes that itself, then the install is tried again.
        if said.contains("dpkg was interrupted") {
            tracing::warn!("an earlier install was interrupted; finishing it with `dpkg --configure -a`");
            let configure = Cmd::new("dpkg")
                .args(["--configure", "-a", "--force-confdef", "--force-confold"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .timeout(INSTALL_TIMEOUT);
            cx.runner.check(&configure)?;
            let again = cx.runner.run(&cmd)?;
            return if again.success() { Ok(()) } else { Err(failure(&cmd, &again)) };
        }
        if !updated && STALE_INDEX.iter().any(|s| said.contains(s)) {
            tracing::info!("apt's index looks stale; updating it and retrying once");
            Apt::update(cx)?;
            return Apt::install_once(cx, names, true);
        }
        Err(failure(&cmd, &out))
    }
}

impl PackageManager for Apt {
    fn name(&self) -> &'static str {
        "apt"
    }

    /// Debian policy: lowercase letters, digits, `+`, `-`, `.`; at least two characters,
    /// starting with a letter or digit. This also keeps options and version pins out of argv.
    fn check_name(&self, name: &str) -> Result<()> {
        let ok = name.len() >= 2
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
        if !ok {
            bail!("`{name}` is not a valid Debian package name (lowercase letters, digits, `+`, `-`, `.`)");
        }
        Ok(())
    }

    fn installed(&self, cx: &Context, names: &[String]) -> Result<Vec<bool>> {
        let db = Apt::status(cx)?;
        Ok(names.iter().map(|n| db.is_installed(n)).collect())
    }

    fn install(&self, cx: &Context, names: &[String]) -> Result<()> {
        let r = Apt::install_once(cx, names, false);
        // Even a failed transaction may have installed some packages.
        cx.shared.invalidate::<DpkgStatus>();
        r
    }

    fn remove(&self, cx: &Context, names: &[String]) -> Result<()> {
        let cmd = apt_get(["remove", "-y"]).args(names.iter().cloned()).timeout(INSTALL_TIMEOUT + LOCK_WAIT);
        let out = cx.runner.run(&cmd);
        cx.shared.invalidate::<DpkgStatus>();
        let out = out?;
        if !out.success() {
            return Err(failure(&cmd, &out));
        }
        Ok(())
    }
}

/// `apt-get` with what every call needs: no prompts, a bounded wait for the dpkg lock, and the
/// C locale, so that the messages matched above are the English ones.
fn apt_get<'a>(args: impl IntoIterator<Item = &'a str>) -> Cmd {
    Cmd::new("apt-get")
        .args(["-q", "-o", &format!("DPkg::Lock::Timeout={}", LOCK_WAIT.as_secs())])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LC_ALL", "C")
}

/// apt's own error lines (`E: …`), with the lock case spelled out.
fn failure(cmd: &Cmd, out: &Output) -> anyhow::Error {
    let said = format!("{}\n{}", out.stdout, out.stderr);
    if let Some(i) = said.find("Could not get lock") {
        let holder = said[i..]
            .find("held by process")
            .map(|j| said[i + j..].lines().next().unwrap_or("").trim_end_matches('.').to_string())
            .map_or(String::new(), |h| format!(" ({h})"));
        return anyhow!(
            "the package database is locked by another process{holder}; waited {}s for it. \
             Try again when that process has finished.",
            LOCK_WAIT.as_secs()
        );
    }
    let errors: Vec<&str> = said.lines().filter(|l| l.starts_with("E:")).collect();
    let msg = if errors.is_empty() { out.message().to_string() } else { errors.join("\n") };
    let code = out.code.map_or("a signal".to_string(), |c| c.to_string());
    anyhow!("`{}` failed (exit {code}): {msg}", cmd.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names() {
        for ok in ["cron", "g++", "libc6", "postgresql-15", "python3.11", "0ad"] {
            Apt.check_name(ok).unwrap();
        }
        for bad in ["", "a", "Cron", "-y", "cron=1.0", "foo bar", "nginx:amd64", "a/b"] {
            assert!(Apt.check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn lock_error_names_the_holder() {
        let out = Output {
            code: Some(100),
            stdout: String::new(),
            stderr: "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (apt-get)\n\
                     E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another process using it?\n"
                .into(),
        };
        let msg = failure(&Cmd::new("apt-get"), &out).to_string();
        assert!(msg.contains("locked by another process (held by process 4242 (apt-get))"), "{msg}");
        assert!(msg.contains("waited 120s"), "{msg}");
    }
}
