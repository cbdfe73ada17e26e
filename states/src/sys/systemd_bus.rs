//! systemd asked over the system bus for the run's one look at its units: no `systemctl`
//! child, whose start alone costs 8 ms or more of a no-op run's budget. Two kinds of calls on one
//! connection: `ListUnitsByNames` for the load and active states of every unit at once, then
//! each unit's `UnitFileState`, all in flight together.
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
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        tokio::time::timeout(TIMEOUT, ask(socket, units))
            .await
            .map_err(|_| anyhow!("no answer from systemd on the system bus within {} s", TIMEOUT.as_secs()))?
    })
    .context("asking systemd about its units on the system bus")
}

async fn ask(socket: &Path, units: &[String]) -> Result<Vec<UnitStatus>> {
    // Connected under the timeout too: a bus daemon that no longer accepts blocks a connect.
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot connect to {}", socket.display()))?
        .into_std()?;
    let bus = zbus::connection::Builder::unix_stream(stream).build().await?;
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
    let file_states = join_all(rows.iter().map(|row| {
        let bus = &bus;
        async move {
            let reply = bus
                .call_method(
                    Some(SYSTEMD),
                    &row.6,
                    Some("org.freedesktop.DBus.Properties"),
                    "Get",
                    &("org.freedesktop.systemd1.Unit", "UnitFileState"),
                )
                .await?;
            let value: OwnedVariant = reply.body().deserialize()?;
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
