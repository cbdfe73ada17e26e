//! systemd asked over the system bus for the run's one look at its units: no `systemctl`
//! child, whose start alone costs 8 ms or more of a no-op run's budget. Two kinds of calls on one
//! connection: `ListUnitsByNames` for the load and active states of every unit at once, then
//! each unit's `UnitFileState`, all in flight together. Also where a socket unit listens (its
//! `Listen`), for the firewall to keep a socket-activated sshd reachable.
//!
//! The bus daemon's socket, not PID 1's private one (root's, where there is no bus daemon):
//! replies there name their sender `org.freedesktop.systemd1`, which zbus refuses as not a
//! unique name. Without a bus daemon `systemd.rs` asks `systemctl`.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use futures_util::future::join_all;
use zbus::{OwnedObjectPath, OwnedVariant};

/// One unit as systemd describes it (over the bus or in `systemctl show`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitStatus {
    pub id: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    pub unit_file_state: String,
}

pub const SYSTEM_BUS: &str = "/run/dbus/system_bus_socket";

const SYSTEMD: &str = "org.freedesktop.systemd1";

/// A hung bus or PID 1 fails the observation rather than the run hanging.
const TIMEOUT: Duration = Duration::from_secs(20);

/// One `ListUnitsByNames` row: name, description, load, active and sub state, followed unit,
/// object path, job id, type and path.
type UnitRow = (String, String, String, String, String, String, OwnedObjectPath, u32, String, OwnedObjectPath);

/// The status of each of `units`, in their order (a unit systemd does not know is
/// `not-found`, as with `systemctl show`), asked on the bus at `socket`.
pub fn units(socket: &Path, units: &[String]) -> Result<Vec<UnitStatus>> {
    block_on(ask(socket, units)).context("asking systemd about its units on the system bus")
}

/// The `Listen` property of socket unit `unit` (pairs such as `("Stream", "[::]:22")`): where
/// PID 1 listens for it now, whatever its unit files say since the last daemon-reload. Empty
/// unless the unit is loaded and active.
pub fn socket_listen(socket: &Path, unit: &str) -> Result<Vec<(String, String)>> {
    block_on(async {
        let bus = connect(socket).await?;
        let row = list(&bus, &[unit.to_string()]).await?.remove(0);
        if row.2 != "loaded" || row.3 != "active" {
            return Ok(Vec::new());
        }
        let value = property(&bus, &row.6, "org.freedesktop.systemd1.Socket", "Listen").await?;
        Ok(Vec::<(String, String)>::try_from(value)?)
    })
    .with_context(|| format!("asking systemd where {unit} listens on the system bus"))
}

fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        tokio::time::timeout(TIMEOUT, f)
            .await
            .map_err(|_| anyhow!("no answer from systemd on the system bus within {} s", TIMEOUT.as_secs()))?
    })
}

async fn connect(socket: &Path) -> Result<zbus::Connection> {
    // Connected under the timeout too: a bus daemon that no longer accepts blocks a connect.
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot connect to {}", socket.display()))?
        .into_std()?;
    Ok(zbus::connection::Builder::unix_stream(stream).build().await?)
}

/// `ListUnitsByNames`: one row per unit, in their order.
async fn list(bus: &zbus::Connection, units: &[String]) -> Result<Vec<UnitRow>> {
    let reply = bus
        .call_method(
            Some(SYSTEMD),
            "/org/freedesktop/systemd1",
            Some("org.freedesktop.systemd1.Manager"),
            "ListUnitsByNames",
            &(units,),
        )
        .await?;
    let rows: Vec<UnitRow> = reply.body().deserialize()?;
    if rows.len() != units.len() {
        bail!("systemd described {} units for the {} asked about", rows.len(), units.len());
    }
    Ok(rows)
}

async fn property(bus: &zbus::Connection, unit: &OwnedObjectPath, iface: &str, name: &str) -> Result<OwnedVariant> {
    let reply =
        bus.call_method(Some(SYSTEMD), unit, Some("org.freedesktop.DBus.Properties"), "Get", &(iface, name)).await?;
    Ok(reply.body().deserialize()?)
}

async fn ask(socket: &Path, units: &[String]) -> Result<Vec<UnitStatus>> {
    let bus = connect(socket).await?;
    let rows = list(&bus, units).await?;
    let file_states = join_all(rows.iter().map(|row| {
        let bus = &bus;
        async move {
            let value = property(bus, &row.6, "org.freedesktop.systemd1.Unit", "UnitFileState").await?;
            Ok::<String, anyhow::Error>(String::try_from(value)?)
        }
    }))
    .await;
    rows.into_iter()
        .zip(file_states)
        .map(|(row, file_state)| {
            Ok(UnitStatus {
                id: row.0,
                load_state: row.2,
                active_state: row.3,
                sub_state: row.4,
                unit_file_state: file_state?,
            })
        })
        .collect()
}
