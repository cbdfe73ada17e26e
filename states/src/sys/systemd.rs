//! What systemd says about the units a run manages: ONE look for all of them, shared by every
//! `service` state (a no-op run must not cost a process per unit): over the system bus on the
//! running system (`systemd_bus`), `systemctl show` where there is no bus daemon or no live
//! system. Units are registered when the role is compiled; the first plan asks about all of
//! them; a state that changed a unit invalidates the answer so the next plan asks again.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Result};

use crate::engine::context::Context;
use crate::engine::runner::Cmd;
pub use crate::sys::systemd_bus::UnitStatus;

pub const PROPERTIES: &str = "Id,LoadState,ActiveState,SubState,UnitFileState";

/// The units to ask about, in registration order (which state owns a unit is the role
/// compiler's concern: see `Claim`).
#[derive(Default)]
struct Registry(Mutex<Vec<String>>);

/// The last answer, keyed by the unit name as registered (aliases report another `Id`).
struct Snapshot(HashMap<String, UnitStatus>);

/// Record at build time that `unit` is to be observed with the others.
pub fn register(cx: &Context, unit: &str) {
    let reg = cx.shared.get_or_init(Registry::default);
    let mut units = reg.0.lock().unwrap();
    if !units.iter().any(|u| u == unit) {
        units.push(unit.to_string());
    }
}

/// Forget the shared answer: the next `status` asks systemd again.
pub fn invalidate(cx: &Context) {
    cx.shared.invalidate::<Snapshot>();
}

/// The status of a registered `unit`, from the run's shared observation (made again once the
/// run changed anything: a package install may have brought the unit).
pub fn status(cx: &Context, unit: &str) -> Result<UnitStatus> {
    let snap = cx.shared.observe(|| query(cx))?;
    snap.0.get(unit).cloned().ok_or_else(|| anyhow!("unit {unit} was not registered (a bug)"))
}

fn query(cx: &Context) -> Result<Snapshot> {
    let units: Vec<String> = cx.shared.get_or_init(Registry::default).0.lock().unwrap().clone();
    let bus = cx.path(crate::sys::systemd_bus::SYSTEM_BUS);
    if cx.direct() && bus.exists() {
        // A bus daemon that is restarting (an upgrade earlier in the run) or gone: systemctl.
        match crate::sys::systemd_bus::units(&bus, &units) {
            Ok(records) => return Ok(Snapshot(units.into_iter().zip(records).collect())),
            Err(e) => tracing::debug!("{e:#}; asking systemctl instead"),
        }
    }
    let cmd = Cmd::new("systemctl").arg("show").arg(format!("--property={PROPERTIES}")).args(&units);
    let out = match cx.runner.run(&cmd) {
        Ok(out) if out.success() => out,
        Ok(out) => {
            return Err(not_booted(cx).unwrap_or_else(|| anyhow!("`{}` failed: {}", cmd.display(), out.message())))
        }
        Err(e) => return Err(not_booted(cx).unwrap_or(e)),
    };
    let records = parse_show(&out.stdout);
    if records.len() != units.len() {
        bail!("`systemctl show` described {} units for the {} asked about", records.len(), units.len());
    }
    Ok(Snapshot(units.into_iter().zip(records).collect()))
}

/// Where PID 1 listens for socket unit `unit` now (its `Listen` pairs, such as
/// `("Stream", "[::]:22")`); empty unless the unit is loaded and active, and under `--root`.
/// Over the bus; where there is none, `systemctl show` only if `spawn` (a no-op run starts no
/// child for this).
pub fn socket_listen(cx: &Context, unit: &str, spawn: bool) -> Result<Vec<(String, String)>> {
    let bus = cx.path(crate::sys::systemd_bus::SYSTEM_BUS);
    if cx.direct() && bus.exists() {
        match crate::sys::systemd_bus::socket_listen(&bus, unit) {
            Ok(listen) => return Ok(listen),
            Err(e) if spawn => tracing::debug!("{e:#}; asking systemctl instead"),
            Err(e) => return Err(e),
        }
    }
    if !spawn || !cx.is_live() {
        return Ok(Vec::new());
    }
    let show = Cmd::new("systemctl").args(["show", "--property=LoadState,ActiveState,Listen", unit]);
    let out = cx.runner.check(&show.timeout(std::time::Duration::from_secs(20)))?;
    Ok(parse_listen(&out.stdout))
}

/// `systemctl show --property=LoadState,ActiveState,Listen`: one `Listen=ADDRESS (TYPE)` line per
/// socket, counted only when the unit is loaded and active.
pub fn parse_listen(text: &str) -> Vec<(String, String)> {
    let mut listen = Vec::new();
    let (mut loaded, mut active) = (false, false);
    for line in text.lines() {
        match line.split_once('=') {
            Some(("LoadState", v)) => loaded = v == "loaded",
            Some(("ActiveState", v)) => active = v == "active",
            Some(("Listen", v)) => {
                if let Some((addr, kind)) = v.rsplit_once(" (").and_then(|(a, k)| Some((a, k.strip_suffix(')')?))) {
                    listen.push((kind.to_string(), addr.to_string()));
                }
            }
            _ => {}
        }
    }
    if loaded && active {
        listen
    } else {
        Vec::new()
    }
}

/// The plain reason when systemd can't be asked because it is not this system's init (a
/// chroot, a plain container), rather than systemctl's bus error.
fn not_booted(cx: &Context) -> Option<anyhow::Error> {
    let marker = cx.path("/run/systemd/system");
    (!marker.is_dir()).then(|| {
        anyhow!("systemd is not running as PID 1 here ({} is missing), so services can't be managed", marker.display())
    })
}

/// `systemctl show` output: `Key=value` lines, one record per unit, records separated by blank
/// lines, in the order the units were named.
pub fn parse_show(text: &str) -> Vec<UnitStatus> {
    let mut out = Vec::new();
    let mut cur: Option<UnitStatus> = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            out.extend(cur.take());
            continue;
        };
        let u = cur.get_or_insert_with(UnitStatus::default);
        let field = match k {
            "Id" => &mut u.id,
            "LoadState" => &mut u.load_state,
            "ActiveState" => &mut u.active_state,
            "SubState" => &mut u.sub_state,
            "UnitFileState" => &mut u.unit_file_state,
            _ => continue,
        };
        *field = v.to_string();
    }
    out.extend(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_from_systemctl_show() {
        let show = "Listen=[::]:22 (Stream)\nListen=0.0.0.0:2222 (Stream)\nListen=/run/x.sock (Stream)\n\
                    LoadState=loaded\nActiveState=active\n";
        let pairs = |v: &[(&str, &str)]| v.iter().map(|(k, a)| (k.to_string(), a.to_string())).collect::<Vec<_>>();
        assert_eq!(
            parse_listen(show),
            pairs(&[("Stream", "[::]:22"), ("Stream", "0.0.0.0:2222"), ("Stream", "/run/x.sock")])
        );
        // Stopped, or not there at all: PID 1 listens nowhere for it.
        assert!(parse_listen(&show.replace("ActiveState=active", "ActiveState=inactive")).is_empty());
        assert!(parse_listen("Listen=\nLoadState=not-found\nActiveState=inactive\n").is_empty());
    }
}
