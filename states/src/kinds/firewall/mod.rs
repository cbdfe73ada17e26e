//! `firewall`: an nftables input filter in the one table the tool owns, `inet bootstrap`, so
//! every other table (Docker's, fail2ban's, an operator's own) survives every run. What it
//! lets in is in `firewall_rules.rs`; the comparison by meaning in `nft.rs`; the lockout guard
//! in `firewall_guard.rs`.
//!
//! - plan: one `nft -j list table inet bootstrap`, read back into the rule model and compared
//!   with the desired table; the boot file, unit and enable link are compared as files. The
//!   rendered ruleset is checked with `nft -c -f` (a temp file) whenever something is to change.
//! - apply: the table is replaced in one `nft -f` transaction under the lockout guard, then
//!   the boot files are written, so they only ever hold a table that was confirmed live.
//! - boot: `/etc/bootstrap/firewall.nft` (the same transaction) is loaded by our own unit,
//!   enabled by its `sysinit.target.wants` link. Not Debian's `/etc/nftables.conf`: it starts
//!   with `flush ruleset`, which would wipe the other tables.
//! - SSH ports are read from sshd's configuration at every plan, so a run that changes them
//!   (the state `requires` that file) opens the new port before sshd moves to it. A plan that
//!   is to change something also asks `sshd -T` (a child process a no-op run doesn't pay).
//! - Under `--root` only the files are managed: the live table belongs to another system.

pub mod guard;
pub mod rules;

use std::fs;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};

use crate::files::conf_file::ConfFile;
use crate::engine::content::{sha256_hex, unified_diff};
use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State, Thing};
use guard::NFT_BIN;
use rules::Spec;
use crate::engine::build::Builder;
use crate::sys::nft::{self, Table, TABLE};
use crate::engine::runner::Cmd;
use crate::sys::sshd_port;

pub const BOOT_FILE: &str = "/etc/bootstrap/firewall.nft";
pub const UNIT: &str = "bootstrap-firewall.service";
pub const UNIT_FILE: &str = "/etc/systemd/system/bootstrap-firewall.service";
pub const ENABLE_LINK: &str = "/etc/systemd/system/sysinit.target.wants/bootstrap-firewall.service";

pub fn build(params: toml::Table, b: &mut Builder) -> Result<Box<dyn State>> {
    let spec = rules::spec(params)?;
    // Refuse a table that would shut out SSH now, before any state runs; plan checks again
    // with the ports as they are then.
    let ssh_ports = sshd_port::ports(b.cx)?;
    let table = rules::table(&spec, &ssh_ports)?;
    // Under --root the table is another machine's: this session is not its concern.
    if b.cx.is_live() {
        let own = b.cx.facts.ssh_session.as_ref();
        for session in sshd_port::sessions_to_keep(b.cx, own, &ssh_ports) {
            rules::keeps_session(&spec, &table, &session, Some(&session) == own, &ssh_ports)?;
        }
    }
    // Said when the node has an address of that family, where SSH over it would work otherwise.
    let has = |v6: bool| b.cx.facts.addresses.iter().any(|a| a.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_ipv6() == v6));
    for family in rules::shut_out_families(&spec) {
        if has(family == "IPv6") {
            tracing::warn!("`ssh_from` names no {family} network: SSH over {family} to this node is shut out");
        }
    }
    let digest = sha256_hex(table.script().as_bytes());
    Ok(Box::new(FirewallState { id: b.id.to_string(), spec, digest }))
}

struct FirewallState {
    id: String,
    spec: Spec,
    digest: String,
}

/// Replace the live table with this one (as planned, so apply loads exactly what was shown).
struct LoadOp {
    table: Table,
    ssh_ports: Vec<u16>,
    /// Whether the plan could ask `sshd -T` (not without `/run/sshd`, which apply may make).
    sshd_asked: bool,
}

/// Write one of the boot files with this content.
struct FileOp(PathBuf, Vec<u8>);

/// Create the `sysinit.target.wants` link: what `systemctl enable` would do, without asking
/// systemd, so it works under `--root` and costs no process to observe.
struct EnableOp;

impl FirewallState {
    /// The plan for SSH on `ssh_ports`, and the script it loads.
    fn plan_with(&self, cx: &Context, ssh_ports: &[u16], sshd_asked: bool) -> Result<(Plan, String)> {
        let want = rules::table(&self.spec, ssh_ports)?;
        let script = want.script();
        let mut plan = Plan::default();
        if cx.is_live() {
            let have = live(cx)?;
            let have = have.0.as_ref();
            if have != Some(&want) {
                let old = have.map(Table::render).unwrap_or_default();
                let diff = unified_diff(&format!("table {TABLE}"), old.as_bytes(), want.render().as_bytes(), false);
                let summary = describe(have, &want);
                let op = LoadOp { table: want.clone(), ssh_ports: ssh_ports.to_vec(), sshd_asked };
                plan.push(Change::new(summary, op).with_diff(Some(diff)));
            }
        }
        for f in self.boot_files(&script) {
            for c in f.plan(cx)? {
                plan.push(Change::new(c.summary, FileOp(f.path.clone(), f.bytes.clone())).with_diff(c.diff));
            }
        }
        if fs::read_link(cx.path(ENABLE_LINK)).ok().as_deref() != Some(Path::new(UNIT_FILE)) {
            plan.push(Change::new(format!("enable {UNIT} at boot (link {ENABLE_LINK})"), EnableOp));
        }
        if !cx.is_live() {
            for c in &mut plan.changes {
                c.summary += " (under --root: files only, the live table is not loaded)";
            }
        }
        Ok((plan, script))
    }

    fn boot_files(&self, script: &str) -> [ConfFile; 2] {
        let head = format!("# managed by bootstrap (state `{}`); local changes are overwritten\n", self.id);
        let unit = format!(
            "{head}[Unit]\n\
             Description=bootstrap firewall: load table {TABLE}\n\
             Documentation=file:{BOOT_FILE}\n\
             # Early, like nftables.service, so no port is open before the table is loaded; and\n\
             # after it, so its `flush ruleset` (if enabled) can't wipe the table.\n\
             DefaultDependencies=no\n\
             Wants=network-pre.target\n\
             Before=network-pre.target shutdown.target\n\
             After=nftables.service\n\
             Conflicts=shutdown.target\n\n\
             [Service]\n\
             Type=oneshot\n\
             RemainAfterExit=yes\n\
             ExecStart={NFT_BIN} -f {BOOT_FILE}\n\n\
             [Install]\n\
             WantedBy=sysinit.target\n"
        );
        [
            ConfFile { path: BOOT_FILE.into(), bytes: format!("{head}{script}").into_bytes() },
            ConfFile { path: UNIT_FILE.into(), bytes: unit.into_bytes() },
        ]
    }
}

impl State for FirewallState {
    fn claims(&self) -> Vec<Claim> {
        let mut claims = vec![Claim::new(Thing::Table(TABLE.to_string())), Claim::new(Thing::Unit(UNIT.to_string()))];
        claims.extend([BOOT_FILE, UNIT_FILE, ENABLE_LINK].map(Claim::path));
        claims
    }

    fn target(&self) -> String {
        format!("table {TABLE}")
    }

    fn digest(&self) -> Option<String> {
        Some(self.digest.clone())
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        let mut ssh_ports = sshd_port::ports(cx)?;
        let (mut plan, mut script) = self.plan_with(cx, &ssh_ports, false)?;
        if !plan.is_empty() && cx.is_live() {
            // About to change something: ask sshd itself, and plan again with what it says.
            // Where it names a port the files don't, every run asks and finds the table right.
            let asked = sshd_port::ask(cx, false);
            ssh_ports.extend(asked.ports);
            ssh_ports.sort_unstable();
            ssh_ports.dedup();
            (plan, script) = self.plan_with(cx, &ssh_ports, asked.sshd)?;
        }
        if !plan.is_empty() {
            nft_check(cx, &script)?;
        }
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        if let Some(op) = plan.ops::<LoadOp>().next() {
            cx.require_live("the firewall table")?;
            if !op.sshd_asked {
                // Refused rather than loading more than was planned: the next plan can ask.
                let asked = sshd_port::ask(cx, true);
                if let Some(p) = asked.ports.iter().find(|p| !op.ssh_ports.contains(p)) {
                    bail!(
                        "sshd -T names tcp/{p}, which the planned table does not open (the plan could not ask sshd: {} was missing); nothing was changed, the next run opens it",
                        sshd_port::RUN_DIR
                    );
                }
            }
            let rollback = self.spec.rollback;
            guard::load(cx, &op.table.script(), rollback, || confirm(cx, &op.table, &op.ssh_ports))?;
        }
        let mut unit_written = false;
        for FileOp(path, bytes) in plan.ops::<FileOp>() {
            let f = ConfFile { path: path.clone(), bytes: bytes.clone() };
            f.apply(cx, &Plan { changes: f.plan(cx)? })?;
            unit_written |= path == Path::new(UNIT_FILE);
        }
        if plan.ops::<EnableOp>().next().is_some() {
            enable(cx)?;
        }
        if unit_written && cx.is_live() {
            cx.runner.check(&Cmd::new("systemctl").arg("daemon-reload"))?;
        }
        Ok(())
    }
}

/// The live table, or `None` when there is none. One child process.
/// The live table (`None`: absent) as this run observed it, shared: made while the role
/// compiles (`early`), made again once the run changed anything.
struct Live(Option<Table>);

fn live(cx: &Context) -> Result<std::sync::Arc<Live>> {
    cx.shared.observe(|| observe(cx).map(Live))
}

/// Observed early on the running system: `nft` costs a child process whatever the rules.
pub fn early(cx: &Context) {
    if cx.direct() {
        let _ = live(cx);
    }
}

pub fn observe(cx: &Context) -> Result<Option<Table>> {
    let cmd = Cmd::new("nft").args(["-j", "list", "table", "inet", "bootstrap"]);
    let out = cx.runner.run(&cmd).map_err(|e| anyhow!("{e:#} (is the nftables package installed?)"))?;
    if out.success() {
        return nft::decode(&out.stdout).map(Some);
    }
    if nft::is_absent(&out.stderr) {
        return Ok(None);
    }
    bail!("`{}` failed: {}", cmd.display(), out.message())
}

/// A one-line account of how the live table differs from the wanted one.
fn describe(have: Option<&Table>, want: &Table) -> String {
    let Some(have) = have else {
        return format!("create table {TABLE} ({} rules, input policy drop)", want.chains.iter().map(|c| c.rules.len()).sum::<usize>());
    };
    let mut what = Vec::new();
    for w in &want.chains {
        let Some(h) = have.chains.iter().find(|c| c.name == w.name) else {
            what.push(format!("chain {} missing", w.name));
            continue;
        };
        if h.base != w.base {
            let show = |b: &Option<nft::Base>| b.as_ref().map_or("none".into(), |b| format!("{} {} priority {} policy {}", b.kind, b.hook, b.prio, b.policy));
            what.push(format!("chain {}: {} -> {}", w.name, show(&h.base), show(&w.base)));
        }
        let missing = w.rules.iter().filter(|r| !h.rules.contains(r)).count();
        let extra = h.rules.iter().filter(|r| !w.rules.contains(r)).count();
        if missing > 0 {
            what.push(format!("{missing} rule(s) missing from {}", w.name));
        }
        if extra > 0 {
            what.push(format!("{extra} unexpected rule(s) in {}", w.name));
        }
        if missing == 0 && extra == 0 && h.rules != w.rules {
            what.push(format!("rules of {} out of order", w.name));
        }
    }
    for h in have.chains.iter().filter(|h| !want.chains.iter().any(|w| w.name == h.name)) {
        what.push(format!("unexpected chain {}", h.name));
    }
    for o in &have.others {
        what.push(format!("unexpected {o}"));
    }
    format!("replace table {TABLE}: {}", what.join(", "))
}

/// `nft -c -f -` on the rendered ruleset, given on stdin: nothing is written anywhere.
fn nft_check(cx: &Context, script: &str) -> Result<()> {
    let out = cx
        .runner
        .run(&Cmd::new("nft").args(["-c", "-f", "-"]).stdin(script.as_bytes().to_vec()))
        .map_err(|e| anyhow!("{e:#} (is the nftables package installed?)"))?;
    if !out.success() {
        bail!("nft rejects the rendered ruleset (nothing was changed): {}", out.message().replace("/dev/stdin", "ruleset"));
    }
    Ok(())
}

/// After loading: the kernel holds exactly the table we rendered (so it admits SSH, which
/// `firewall_rules::table` checked), every port sshd's processes listen on is one it opens,
/// and sshd, where it listens, still accepts a connection.
/// The connection goes over loopback, so it proves sshd and the host's network stack are
/// alive rather than the SSH rule itself; that rule is proven by the table read back.
fn confirm(cx: &Context, want: &Table, ssh_ports: &[u16]) -> Result<()> {
    let have = observe(cx)?;
    if have.as_ref() != Some(want) {
        bail!("the table read back is not the one loaded ({})", describe(have.as_ref(), want));
    }
    // sshd may have come to listen where the plan did not see it (a restart in this run), as
    // may PID 1 for a socket-activated one (a daemon-reload).
    if let Some(p) = sshd_port::live_ports(cx, true).into_iter().find(|p| !ssh_ports.contains(p)) {
        bail!("sshd listens on tcp/{p}, which the table loaded does not open");
    }
    if let Some(p) = sshd_port::socket_listening(cx, true).into_iter().find(|p| !ssh_ports.contains(p)) {
        bail!("{} listens on tcp/{p}, which the table loaded does not open", sshd_port::SOCKET_UNIT);
    }
    for &p in ssh_ports {
        if let Some(addr) = sshd_port::listening(cx, p) {
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .with_context(|| format!("sshd listens on {addr} but a connection to it failed"))?;
        }
    }
    Ok(())
}

/// Point the enable link at the unit, replacing whatever is there, atomically.
fn enable(cx: &Context) -> Result<()> {
    // Through the directory reached without following a link, as every write.
    let (opened, name) = crate::engine::beneath::open_parent(cx, Path::new(ENABLE_LINK), Some(0o755), None)?;
    let (dir, link) = (opened.path(), opened.join(&name));
    let dir = dir.as_path();
    let tmp = dir.join(".bootstrap-firewall.service.tmp");
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    std::os::unix::fs::symlink(UNIT_FILE, &tmp)?;
    fs::rename(&tmp, &link).with_context(|| format!("cannot create {ENABLE_LINK}"))?;
    crate::engine::atomic::sync_dir(dir)
}
