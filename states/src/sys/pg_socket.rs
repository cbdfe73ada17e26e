//! PostgreSQL's local socket spoken to directly, for the run's one observation: no psql child
//! (about 20 ms of a no-op run's 25). Peer authentication as the `postgres` OS user, as psql
//! gets it: a short-lived thread of its own takes that user's effective uid for the one
//! `connect` (the server reads the peer's credentials as they were at connect time) and gives
//! it back. Only that thread: the uid is changed with the raw system call, which the kernel
//! applies per thread, rather than libc's `setresuid`, which changes every thread of the run.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use futures_util::future::{select, Either};
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// A hung server fails the observation rather than the run hanging.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The first column of the first row `sql` returns, as text, from the server on `socket`
/// (`…/.s.PGSQL.5432`), connected as OS and database user `user`.
pub fn query_text(socket: &Path, user: &str, sql: &str) -> Result<String> {
    let account = nix::unistd::User::from_name(user)?.ok_or_else(|| anyhow!("no OS user `{user}` here"))?;
    let stream = connect_as(socket, account.uid.as_raw())
        .with_context(|| format!("cannot connect to {} as {user}", socket.display()))?;
    stream.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let stream = tokio::net::UnixStream::from_std(stream)?;
        let mut config = tokio_postgres::Config::new();
        config.user(user).dbname("postgres").application_name("bootstrap");
        let talk = async {
            let (client, connection) = config.connect_raw(stream, NoTls).await?;
            let query = std::pin::pin!(client.simple_query(sql));
            match select(query, connection).await {
                Either::Left((rows, _)) => Ok(rows?),
                Either::Right((ended, _)) => {
                    Err(ended.err().map_or_else(|| anyhow!("the server closed the connection"), Into::into))
                }
            }
        };
        let messages = tokio::time::timeout(TIMEOUT, talk)
            .await
            .map_err(|_| anyhow!("no answer from PostgreSQL within {} s", TIMEOUT.as_secs()))??;
        messages
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
                _ => None,
            })
            .flatten()
            .ok_or_else(|| anyhow!("the query returned no value"))
    })
}

/// `socket` connected from a thread whose effective uid is `uid` for the call. A connect to a
/// server that no longer accepts (a full backlog) blocks: after `TIMEOUT` the thread is left to
/// it (it ends with the run) and the observation fails.
///
/// Taking another uid makes the kernel mark the process non-dumpable for the rest of the run
/// (no core dump). Nothing in bootstrap calls libc's `setuid` family, which would reset every
/// thread's ids, this one's included, behind its back.
fn connect_as(socket: &Path, uid: u32) -> Result<UnixStream> {
    let (tx, rx) = std::sync::mpsc::channel();
    let socket = socket.to_path_buf();
    std::thread::spawn(move || {
        // SAFETY: reads this thread's own credentials.
        let own = unsafe { libc::geteuid() };
        let result = set_thread_euid(uid).and_then(|()| {
            let stream = UnixStream::connect(&socket);
            set_thread_euid(own)?;
            Ok(stream?)
        });
        let _ = tx.send(result);
    });
    rx.recv_timeout(TIMEOUT).map_err(|_| anyhow!("no connection within {} s", TIMEOUT.as_secs()))?
}

/// This thread's effective uid (real and saved stay as they were, so the old one can be taken
/// back).
fn set_thread_euid(uid: u32) -> Result<()> {
    const UNCHANGED: libc::uid_t = libc::uid_t::MAX;
    // SAFETY: a plain system call on integers; it touches only this thread's credentials.
    let rc = unsafe { libc::syscall(libc::SYS_setresuid, UNCHANGED, uid, UNCHANGED) };
    if rc != 0 {
        bail!("cannot take uid {uid} for the connection: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
