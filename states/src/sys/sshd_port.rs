//! Where sshd listens, so the firewall never closes the door the operator came in by.
//!
//! Ports come from sshd's configuration: `/etc/ssh/sshd_config` and every file its `Include`
//! lines name (globs, relative to `/etc/ssh`, nested), plus `/etc/ssh/sshd_config.d/*.conf`
//! even without the `Include` Debian ships. Every `Port` counts (sshd listens on all of them),
//! as does an explicit port in `ListenAddress host:port`; with none, 22. A socket-activated
//! sshd (`ssh.socket`, the default on recent Ubuntu) listens where its `ListenStream=` says, so
//! those ports count too (the unit file, then its drop-ins; an empty `ListenStream=` resets),
//! as do those PID 1 listens on for it now (asked over the bus: a drop-in edited without a
//! daemon-reload). Reading files instead of running `sshd -T` keeps a no-op run free of child
//! processes, and works when sshd is not installed (22 is still kept open: the host may get
//! sshd later); `ask` runs `sshd -T` when the firewall is about to change the live table.
//! Over-approximating is the safe side: an extra open port beats a lockout.

use std::fs;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};

use crate::engine::context::Context;
use crate::engine::facts::SshSession;
use crate::engine::runner::Cmd;
use crate::sys::{sockets, systemd};

pub const DEFAULT: u16 = 22;

/// The socket unit of a socket-activated sshd on Debian and Ubuntu.
pub const SOCKET_UNIT: &str = "ssh.socket";

/// Absolute: a run from cron may have no `/usr/sbin` in its PATH.
pub const SSHD_BIN: &str = "/usr/sbin/sshd";

/// sshd's privilege separation directory: made by ssh.service as it starts, and required by
/// `sshd -T` run as root.
pub const RUN_DIR: &str = "/run/sshd";

/// How deep `Include`s may nest (sshd's own limit is 16).
const MAX_DEPTH: usize = 16;

/// The TCP ports sshd is configured to listen on and those it listens on now, sorted, never
/// empty.
pub fn ports(cx: &Context) -> Result<Vec<u16>> {
    let mut seen = Vec::new();
    let mut ports = Vec::new();
    read_config(cx, Path::new("/etc/ssh/sshd_config"), 0, &mut seen, &mut ports)?;
    for f in glob(cx, "/etc/ssh/sshd_config.d/*.conf") {
        read_config(cx, &f, 0, &mut seen, &mut ports)?;
    }
    if ports.is_empty() {
        ports.push(DEFAULT);
    }
    ports.extend(socket_ports(cx)?);
    ports.extend(socket_listening(cx, false));
    ports.extend(live_ports(cx, false));
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

/// The ports one configuration file (as on the node) names, and those of what it includes.
fn read_config(cx: &Context, file: &Path, depth: usize, seen: &mut Vec<PathBuf>, out: &mut Vec<u16>) -> Result<()> {
    if seen.iter().any(|f| f == file) {
        return Ok(());
    }
    if depth > MAX_DEPTH {
        anyhow::bail!("sshd's `Include`s nest deeper than {MAX_DEPTH} at {}", file.display());
    }
    seen.push(file.to_path_buf());
    let text = match fs::read_to_string(cx.path(file)) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let parsed = parse(&text).with_context(|| format!("in {}", file.display()))?;
    out.extend(parsed.ports);
    for pattern in parsed.includes {
        let pattern = if pattern.starts_with('/') { pattern } else { format!("/etc/ssh/{pattern}") };
        for f in glob(cx, &pattern) {
            read_config(cx, &f, depth + 1, seen, out)?;
        }
    }
    Ok(())
}

/// What one configuration file names.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub ports: Vec<u16>,
    /// `Include` patterns, as written.
    pub includes: Vec<String>,
}

/// Ports and includes named by one configuration file.
pub fn parse(text: &str) -> Result<Parsed> {
    let mut out = Parsed::default();
    for line in text.lines() {
        let line = line.trim();
        // sshd accepts `Keyword value` and `Keyword=value`.
        let mut words = line.splitn(2, |c: char| c.is_whitespace() || c == '=');
        let key = words.next().unwrap_or("").to_ascii_lowercase();
        let rest = words.next().unwrap_or("").trim_start_matches(|c: char| c.is_whitespace() || c == '=');
        // sshd splits arguments as a shell would: `Port "2201"` is port 2201.
        let value = match rest.strip_prefix('"') {
            Some(quoted) => quoted.split('"').next().unwrap_or(""),
            None => rest.split_whitespace().next().unwrap_or(""),
        };
        match key.as_str() {
            // `Port` is not allowed inside a Match block, so nothing after one matters, unless
            // it is `Match all`: what follows that is global again.
            "match" if value.eq_ignore_ascii_case("all") => {}
            "match" => break,
            "include" => out.includes.extend(rest.split_whitespace().map(|w| w.trim_matches('"').to_string())),
            "port" => out.ports.push(port(value)?),
            "listenaddress" => {
                let tail = match value.strip_prefix('[') {
                    Some(v6) => v6.split_once("]:").map(|(_, p)| p),
                    None => value.split_once(':').filter(|(_, p)| !p.contains(':')).map(|(_, p)| p),
                };
                if let Some(p) = tail {
                    out.ports.push(port(p)?);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn port(s: &str) -> Result<u16> {
    s.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| anyhow!("`{s}` is not a port sshd could listen on"))
}

/// The TCP ports of `ssh.socket`, when there is one: the unit (the first of /etc, /run,
/// /usr/lib, /lib) and then its drop-ins, in file name order, as systemd reads them: a drop-in
/// in an earlier directory hides one of the same name in a later one, and a unit or drop-in
/// that is empty or a link to /dev/null (masked) adds nothing.
fn socket_ports(cx: &Context) -> Result<Vec<u16>> {
    const DIRS: &[&str] =
        &["/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"];
    let exists = |p: &Path| fs::symlink_metadata(cx.path(p)).is_ok();
    let Some(unit) = DIRS.iter().map(|d| PathBuf::from(d).join("ssh.socket")).find(|p| exists(p)) else {
        return Ok(Vec::new());
    };
    if masked(cx, &unit) {
        return Ok(Vec::new());
    }
    let mut drop_ins: Vec<PathBuf> = Vec::new();
    for d in DIRS {
        for f in glob_entries(cx, &format!("{d}/ssh.socket.d/*.conf")) {
            if !drop_ins.iter().any(|seen| seen.file_name() == f.file_name()) {
                drop_ins.push(f);
            }
        }
    }
    drop_ins.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let mut ports = Vec::new();
    for f in std::iter::once(unit).chain(drop_ins) {
        if masked(cx, &f) {
            continue;
        }
        let text = fs::read_to_string(cx.path(&f)).with_context(|| format!("cannot read {}", f.display()))?;
        listen_streams(&text, &mut ports);
    }
    Ok(ports)
}

/// A unit file or drop-in systemd ignores: a link to /dev/null, or empty.
fn masked(cx: &Context, f: &Path) -> bool {
    let link = fs::read_link(cx.path(f)).ok();
    link.is_some_and(|l| l == Path::new("/dev/null")) || fs::metadata(cx.path(f)).map_or(true, |m| m.len() == 0)
}

/// Applies one unit file's `ListenStream=` lines of `[Socket]` to `ports`: an empty one
/// resets the list; a path (a UNIX socket) or another family is not a TCP port.
pub fn listen_streams(text: &str, ports: &mut Vec<u16>) {
    let mut in_socket = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_socket = line == "[Socket]";
            continue;
        }
        let Some(value) = line.strip_prefix("ListenStream").map(str::trim_start).and_then(|r| r.strip_prefix('='))
        else {
            continue;
        };
        if !in_socket {
            continue;
        }
        let value = value.trim();
        if value.is_empty() {
            ports.clear();
            continue;
        }
        ports.extend(stream_port(value));
    }
}

/// The TCP port of a stream socket address as systemd writes it (`ListenStream=`, the `Listen`
/// property): `22`, `0.0.0.0:22`, `[::]:22`, `[fe80::1%eth0]:22`; `None` for a UNIX socket
/// (a path, `@abstract`), vsock, or anything else.
pub fn stream_port(addr: &str) -> Option<u16> {
    let addr = addr.trim();
    let port = match addr.strip_prefix('[') {
        Some(v6) => v6.split_once("]:")?.1,
        None => match addr.split_once(':') {
            Some((host, port)) if !host.is_empty() && !port.contains(':') && host != "vsock" => port,
            Some(_) => return None,
            None => addr,
        },
    };
    port.parse::<u16>().ok().filter(|p| *p != 0)
}

/// The TCP ports of a socket unit's `Listen` pairs: `Stream` ones only.
pub fn listen_ports(listen: &[(String, String)]) -> Vec<u16> {
    listen.iter().filter(|(kind, _)| kind == "Stream").filter_map(|(_, addr)| stream_port(addr)).collect()
}

/// PID 1's listening sockets for `ssh.socket`, as this run observed them.
struct SocketListen(Vec<(String, String)>);

/// The TCP ports PID 1 listens on for `ssh.socket` now (a socket-activated sshd's listener is
/// PID 1's, so `live_ports` can't see it). Over the bus, observed once per run (made again
/// after a change); `fresh` asks again at once, through `systemctl` where there is no bus.
/// Not knowing is no error: the unit files still count.
pub fn socket_listening(cx: &Context, fresh: bool) -> Vec<u16> {
    let ask = || {
        systemd::socket_listen(cx, SOCKET_UNIT, fresh).unwrap_or_else(|e| {
            tracing::debug!("where {SOCKET_UNIT} listens is unknown, its unit files count: {e:#}");
            Vec::new()
        })
    };
    if fresh {
        return listen_ports(&ask());
    }
    cx.shared.observe(|| Ok(SocketListen(ask()))).map(|l| listen_ports(&l.0)).unwrap_or_default()
}

/// What asking sshd and systemd themselves (child processes) found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Asked {
    /// The ports of `sshd -T` and of `ssh.socket`, sorted.
    pub ports: Vec<u16>,
    /// False when `sshd -T` could not be asked: it needs `/run/sshd`, which was missing and
    /// was not to be made (in a plan).
    pub sshd: bool,
}

/// The ports sshd's effective configuration (`sshd -T`) and `ssh.socket` name, for when the
/// firewall is about to change the live table. A failure (a bad configuration) is no error
/// here, only logged: the files were read already. `make_run_dir` allows making `/run/sshd`
/// (as ssh.service would) when `sshd -T` needs it.
pub fn ask(cx: &Context, make_run_dir: bool) -> Asked {
    let mut asked = Asked { ports: socket_listening(cx, true), sshd: true };
    if !cx.path(SSHD_BIN).exists() {
        tracing::debug!("{SSHD_BIN} is not installed: nothing to ask");
    } else if let Err(e) = run_dir(cx, make_run_dir) {
        tracing::debug!("`sshd -T` not asked: {e:#}");
        asked.sshd = false;
    } else {
        match effective_ports(cx, &[]) {
            Ok(ports) => asked.ports.extend(ports),
            Err(e) => tracing::warn!("only sshd's configuration files say where it listens: {e:#}"),
        }
    }
    asked.ports.sort_unstable();
    asked.ports.dedup();
    asked
}

/// `/run/sshd`, made (root's, 0755, as systemd's `RuntimeDirectory=`) if allowed.
fn run_dir(cx: &Context, make: bool) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = cx.path(RUN_DIR);
    if dir.is_dir() {
        return Ok(());
    }
    if !make {
        anyhow::bail!("it needs {RUN_DIR}, which is missing (sshd has not started since boot)");
    }
    fs::DirBuilder::new().mode(0o755).create(&dir).with_context(|| format!("cannot create {RUN_DIR}"))?;
    // Whatever the umask.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot set the mode of {RUN_DIR}"))
}

/// The ports of `sshd -T` (`args` added: `-f FILE` in tests).
pub fn effective_ports(cx: &Context, args: &[&str]) -> Result<Vec<u16>> {
    let cmd = Cmd::new(SSHD_BIN).arg("-T").args(args.iter().copied()).timeout(Duration::from_secs(20));
    let out = cx.runner.check(&cmd)?;
    Ok(parse_effective(&out.stdout))
}

/// Every `port` line of `sshd -T` output and the port of every `listenaddress` line
/// (`listenaddress [::1]:2222`, `listenaddress 0.0.0.0:22 rdomain blue`).
pub fn parse_effective(text: &str) -> Vec<u16> {
    let mut ports = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let p = match (words.next(), words.next()) {
            (Some("port"), Some(p)) => p.parse::<u16>().ok().filter(|p| *p != 0),
            (Some("listenaddress"), Some(a)) => stream_port(a),
            _ => None,
        };
        ports.extend(p);
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The files (as on the node) a pattern with `*` and `?` names, sorted; a pattern with no
/// wildcard names itself.
fn glob(cx: &Context, pattern: &str) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/")];
    for part in pattern.split('/').filter(|p| !p.is_empty()) {
        let mut next = Vec::new();
        for dir in &found {
            if !part.contains(['*', '?']) {
                next.push(dir.join(part));
                continue;
            }
            let Ok(entries) = fs::read_dir(cx.path(dir)) else { continue };
            let mut names: Vec<String> = entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
            names.sort();
            next.extend(names.into_iter().filter(|n| wildcard(part, n)).map(|n| dir.join(n)));
        }
        found = next;
    }
    found.into_iter().filter(|p| cx.path(p).is_file()).collect()
}

/// Like `glob`, but whatever the names are (a link to /dev/null included).
fn glob_entries(cx: &Context, pattern: &str) -> Vec<PathBuf> {
    let (dir, file) = pattern.rsplit_once('/').unwrap_or(("/", pattern));
    let Ok(entries) = fs::read_dir(cx.path(dir)) else { return Vec::new() };
    let mut names: Vec<String> = entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
    names.sort();
    names.into_iter().filter(|n| wildcard(file, n)).map(|n| Path::new(dir).join(n)).collect()
}

/// Whether `name` matches `pattern` (`*`: any run, `?`: one character; a leading dot only
/// when the pattern has one, as in the shell).
fn wildcard(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    go(&p, &n)
}

/// An address sshd listens on for `port` right now (the wildcard as loopback), from
/// `/proc/net/tcp{,6}`; `None` when nothing listens there.
pub fn listening(cx: &Context, port: u16) -> Option<SocketAddr> {
    let s = sockets::listeners(cx).into_iter().find(|s| s.local.port() == port)?;
    let ip = match s.local.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    Some(SocketAddr::new(ip, port))
}

/// The SSH sessions to keep: the run's own while its connection is open. When the connection
/// it names is gone although sshd still listens where it came in (`SSH_CONNECTION` inherited
/// by a tmux or screen session from an earlier connection), every connection open now to one
/// of `ports` instead, since the one this run comes through can't be told from the others.
/// A variable naming an address this host doesn't listen on can't be judged and is kept.
pub fn sessions_to_keep(cx: &Context, own: Option<&SshSession>, ports: &[u16]) -> Vec<SshSession> {
    let Some(own) = own else { return Vec::new() };
    if !cx.is_live() {
        return vec![own.clone()];
    }
    let all = sockets::sockets(cx);
    let server = SocketAddr::new(own.server, own.port);
    let live = all.iter().any(|s| {
        s.state == sockets::ESTABLISHED && s.local == server && s.remote == SocketAddr::new(own.client, own.client_port)
    });
    // Only a server address of this node's can be judged: another (a namespace's, a
    // forwarded variable) is kept as it is.
    let ours = own.server.is_loopback() || cx.facts.addresses.contains(&own.server.to_string());
    let came_in_here = ours
        && all.iter().any(|s| {
            s.state == sockets::LISTEN
                && s.local.port() == own.port
                && (s.local.ip() == own.server || s.local.ip().is_unspecified())
        });
    if live || !came_in_here {
        return vec![own.clone()];
    }
    tracing::debug!(
        "SSH_CONNECTION names a connection that is gone (tmux, screen?): keeping every open SSH connection"
    );
    all.iter()
        .filter(|s| s.state == sockets::ESTABLISHED && ports.contains(&s.local.port()))
        .map(|s| SshSession {
            client: s.remote.ip(),
            port: s.local.port(),
            client_port: s.remote.port(),
            server: s.local.ip(),
        })
        .collect()
}

/// The TCP ports sshd's listener listens on now, whatever its configuration says (started
/// by hand with `-p`, a file we don't read): the table must open these too. A socket-activated
/// listener is PID 1's: see `socket_listening`. Observed once per run
/// (made again after a change), `fresh` asks again at once (the confirmation after a load).
pub fn live_ports(cx: &Context, fresh: bool) -> Vec<u16> {
    struct LivePorts(Vec<u16>);
    let observe = || {
        let held = sockets::inodes_of(cx, "sshd");
        if held.is_empty() {
            return Vec::new();
        }
        let mut ports: Vec<u16> =
            sockets::listeners(cx).into_iter().filter(|s| held.contains(&s.inode)).map(|s| s.local.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    };
    if fresh {
        return observe();
    }
    cx.shared.observe(|| Ok(LivePorts(observe()))).map(|p| p.0.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ports_the_way_sshd_does() {
        let conf = "Include /etc/ssh/sshd_config.d/*.conf\n#Port 22\nPort 2222\n  port=2200\n\
                    ListenAddress 10.0.0.1:2022\nListenAddress [::1]:2023\nListenAddress ::\n\
                    ListenAddress 10.0.0.2\nMatch User x\n  Port 1\n";
        let parsed = parse(conf).unwrap();
        assert_eq!(parsed.ports, [2222, 2200, 2022, 2023]);
        assert_eq!(parsed.includes, ["/etc/ssh/sshd_config.d/*.conf"]);
        let after_all = parse("Match User x\n  X11Forwarding no\nMatch all\nPort 2222\n").unwrap();
        assert_eq!(after_all.ports, Vec::<u16>::new(), "a Match block ends the file for ports");
        assert_eq!(parse("Match all\nPort 2222\n").unwrap().ports, [2222], "after `Match all`, ports are global");
        assert!(parse("Port 70000\n").unwrap_err().to_string().contains("70000"));
        assert_eq!(
            parse("Port \"2201\"\nPort=\"2202\" # quoted\n").unwrap().ports,
            [2201, 2202],
            "quoted as sshd reads it"
        );
        assert_eq!(parse("# nothing\n").unwrap(), Parsed::default());
    }

    #[test]
    fn socket_listen_streams_with_resets() {
        let mut ports = Vec::new();
        listen_streams("[Unit]\nListenStream=9\n[Socket]\nListenStream=22\nAccept=yes\n", &mut ports);
        assert_eq!(ports, [22], "only [Socket] counts");
        listen_streams(
            "[Socket]\nListenStream=\nListenStream=0.0.0.0:2222\nListenStream=[::]:2223\nListenStream=/run/x.sock\n",
            &mut ports,
        );
        assert_eq!(ports, [2222, 2223], "an empty assignment resets, a path is no port");
    }

    #[test]
    fn listen_addresses_as_systemd_writes_them() {
        let listen: Vec<(String, String)> = [
            ("Stream", "0.0.0.0:22"),
            ("Stream", "[::]:2222"),
            ("Stream", "2200"),
            ("Stream", "[fe80::1%eth0]:2201"),
            ("Stream", "/run/ssh.sock"),
            ("Stream", "@ssh-abstract"),
            ("Stream", "vsock:2:2202"),
            ("Stream", "::1"),
            ("Stream", "[::]:0"),
            ("Stream", "0.0.0.0:ssh"),
            ("Datagram", "0.0.0.0:2203"),
            ("SequentialPacket", "/run/x"),
            ("Netlink", "route 0"),
        ]
        .map(|(k, a)| (k.to_string(), a.to_string()))
        .into();
        assert_eq!(listen_ports(&listen), [22, 2222, 2200, 2201]);
    }

    #[test]
    fn where_pid_1_listens_for_ssh_socket_counts() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(ports(&Context::for_tests(t.path())).unwrap(), [DEFAULT]);
        // What the bus would have said, observed for this run: ssh.socket on 2222 after a
        // drop-in took effect that is no longer on disk.
        let cx = Context::for_tests(t.path());
        let listen = vec![("Stream".to_string(), "[::]:2222".to_string()), ("Datagram".into(), "0.0.0.0:53".into())];
        cx.shared.observe(|| Ok(SocketListen(listen))).unwrap();
        assert_eq!(ports(&cx).unwrap(), [DEFAULT, 2222]);
        // Asked afresh (the confirmation) with no live system to ask: nothing, and no error.
        assert_eq!(socket_listening(&cx, true), Vec::<u16>::new());
    }

    /// `sshd -T` on Debian 12 (OpenSSH 9.2p1), its head: ports and listen addresses first.
    const SSHD_T: &str = "port 2222\nport 2200\naddressfamily any\nlistenaddress 127.0.0.1:2300\n\
                          listenaddress [::1]:2222\nlistenaddress [::1]:2200\nusepam yes\n\
                          logingracetime 120\nx11displayoffset 10\nmaxauthtries 6\nmaxsessions 10\n\
                          clientaliveinterval 0\nclientalivecountmax 3\nrequiredrsasize 1024\n\
                          streamlocalbindmask 0177\nunusedconnectiontimeout none\n\
                          permitrootlogin without-password\nsubsystem sftp /usr/lib/openssh/sftp-server\n";

    #[test]
    fn reads_the_ports_of_sshd_t() {
        assert_eq!(parse_effective(SSHD_T), [2200, 2222, 2300]);
        let default = "port 22\naddressfamily any\nlistenaddress [::]:22\nlistenaddress 0.0.0.0:22\n";
        assert_eq!(parse_effective(default), [22]);
        // A routing domain follows the address; `port` inside another word is no port line.
        let rdomain = "listenaddress 0.0.0.0:2022 rdomain blue\nport 22\nx11displayoffset 10\ngatewayports no\n";
        assert_eq!(parse_effective(rdomain), [22, 2022]);
        assert_eq!(parse_effective(""), Vec::<u16>::new());
    }

    #[test]
    fn asks_the_real_sshd() {
        if !Path::new(SSHD_BIN).exists() || (nix::unistd::geteuid().is_root() && !Path::new(RUN_DIR).is_dir()) {
            eprintln!("skipped: no {SSHD_BIN} (or no {RUN_DIR}) here");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let key = t.path().join("host_key");
        let keygen = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(keygen.success());
        let conf = t.path().join("sshd_config");
        fs::write(&conf, "Port 2222\nPort 2200\nListenAddress 127.0.0.1:2300\nListenAddress [::1]\n").unwrap();
        let cx = Context::for_tests(Path::new("/"));
        let (conf, host_key) = (conf.to_string_lossy(), format!("HostKey={}", key.display()));
        assert_eq!(effective_ports(&cx, &["-f", &conf, "-o", &host_key]).unwrap(), [2200, 2222, 2300]);
        // A configuration sshd refuses is an error here (`ask` only logs it).
        fs::write(t.path().join("bad"), "Port x\n").unwrap();
        let bad = t.path().join("bad").to_string_lossy().to_string();
        let err = effective_ports(&cx, &["-f", &bad, "-o", &host_key]).unwrap_err();
        assert!(format!("{err:#}").contains("Badly formatted port number"), "{err:#}");
    }

    /// Records each command and answers with the output given.
    struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<String>>>, crate::engine::runner::Output);

    impl crate::engine::runner::Runner for Recorder {
        fn run(&self, cmd: &Cmd) -> Result<crate::engine::runner::Output> {
            self.0.lock().unwrap().push(cmd.display());
            Ok(self.1.clone())
        }
    }

    #[test]
    fn sshd_t_is_asked_with_its_run_directory_only_where_allowed() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let mut cx = Context::for_tests(t.path());
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let runner = |code, stdout: &str| {
            let out = crate::engine::runner::Output {
                code: Some(code),
                stdout: stdout.into(),
                stderr: "Badly formatted port number.".into(),
            };
            Box::new(Recorder(log.clone(), out))
        };
        let cmds = || std::mem::take(&mut *log.lock().unwrap());
        cx.runner = runner(0, SSHD_T);
        // Not installed: nothing to ask, nothing run.
        assert_eq!(ask(&cx, true), Asked { ports: Vec::new(), sshd: true });
        assert!(cmds().is_empty());
        // Installed, never started: a plan may not make /run/sshd, so sshd is not asked.
        let bin = t.path().join(SSHD_BIN.trim_start_matches('/'));
        fs::create_dir_all(bin.parent().unwrap()).unwrap();
        fs::write(&bin, "").unwrap();
        fs::create_dir_all(t.path().join("run")).unwrap();
        assert_eq!(ask(&cx, false), Asked { ports: Vec::new(), sshd: false });
        assert!(cmds().is_empty() && !t.path().join("run/sshd").exists());
        // Apply may: made as ssh.service makes it, then asked.
        assert_eq!(ask(&cx, true), Asked { ports: vec![2200, 2222, 2300], sshd: true });
        assert_eq!(cmds(), ["/usr/sbin/sshd -T"]);
        let mode = fs::metadata(t.path().join("run/sshd")).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o755);
        // A configuration sshd refuses is no error: nothing learnt.
        cx.runner = runner(255, "");
        assert_eq!(ask(&cx, false), Asked { ports: Vec::new(), sshd: true });
        assert_eq!(cmds(), ["/usr/sbin/sshd -T"]);
    }

    #[test]
    fn a_stale_ssh_connection_variable_keeps_every_open_connection() {
        let cx = Context::for_tests(std::path::Path::new("/"));
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let _accepted = l.accept().unwrap();
        let here = c.local_addr().unwrap();
        let live = SshSession::parse(&format!("127.0.0.1 {} 127.0.0.1 {port}", here.port())).unwrap();
        assert_eq!(sessions_to_keep(&cx, Some(&live), &[port]), std::slice::from_ref(&live));
        // tmux kept the variable of a connection that is gone: every open one is kept instead.
        let stale = SshSession::parse(&format!("198.51.100.7 50000 127.0.0.1 {port}")).unwrap();
        let kept = sessions_to_keep(&cx, Some(&stale), &[port]);
        assert!(kept.iter().any(|k| k.client_port == here.port() && k.port == port), "{kept:?}");
        assert!(!kept.contains(&stale), "{kept:?}");
        // Named where nothing listens here: can't be judged, kept as it is.
        let elsewhere = SshSession::parse("2001:db8::5 40000 2001:db8::10 22").unwrap();
        assert_eq!(sessions_to_keep(&cx, Some(&elsewhere), &[port]), std::slice::from_ref(&elsewhere));
        assert!(sessions_to_keep(&cx, None, &[port]).is_empty());
        // A listener on every address still doesn't make a server address that isn't ours.
        let any = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let any_port = any.local_addr().unwrap().port();
        let foreign = SshSession::parse(&format!("198.51.100.7 50000 198.51.100.10 {any_port}")).unwrap();
        assert_eq!(sessions_to_keep(&cx, Some(&foreign), &[any_port]), std::slice::from_ref(&foreign));
    }

    #[test]
    fn socket_drop_ins_as_systemd_reads_them() {
        let t = tempfile::tempdir().unwrap();
        let cx = Context::for_tests(t.path());
        let put = |p: &str, s: &str| {
            let p = t.path().join(p.trim_start_matches('/'));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, s).unwrap();
        };
        put("/usr/lib/systemd/system/ssh.socket", "[Socket]\nListenStream=22\n");
        put("/usr/lib/systemd/system/ssh.socket.d/port.conf", "[Socket]\nListenStream=\nListenStream=2201\n");
        assert_eq!(socket_ports(&cx).unwrap(), [2201]);
        // The same name in /etc hides the vendor's drop-in.
        put("/etc/systemd/system/ssh.socket.d/port.conf", "[Socket]\nListenStream=2202\n");
        assert_eq!(socket_ports(&cx).unwrap(), [22, 2202]);
        // A drop-in masked by a link to /dev/null hides it too, and adds nothing.
        fs::remove_file(t.path().join("etc/systemd/system/ssh.socket.d/port.conf")).unwrap();
        std::os::unix::fs::symlink("/dev/null", t.path().join("etc/systemd/system/ssh.socket.d/port.conf")).unwrap();
        assert_eq!(socket_ports(&cx).unwrap(), [22]);
        // A masked unit listens nowhere.
        std::os::unix::fs::symlink("/dev/null", t.path().join("etc/systemd/system/ssh.socket")).unwrap();
        assert_eq!(socket_ports(&cx).unwrap(), Vec::<u16>::new());
    }

    #[test]
    fn wildcards_as_the_shell_matches_them() {
        assert!(wildcard("*.conf", "50-cloud-init.conf"));
        assert!(!wildcard("*.conf", "x.conf.bak"));
        assert!(!wildcard("*.conf", ".hidden.conf"));
        assert!(wildcard("a?c", "abc") && !wildcard("a?c", "ac"));
    }

    #[test]
    fn finds_what_a_process_listens_on() {
        // This test process plays sshd: its comm is the test binary's, so ask for that name.
        let me = std::fs::read_to_string("/proc/self/comm").unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let cx = Context::for_tests(std::path::Path::new("/"));
        let held = sockets::inodes_of(&cx, me.trim_end());
        let ports: Vec<u16> = sockets::sockets(&cx)
            .into_iter()
            .filter(|s| s.state == sockets::LISTEN && held.contains(&s.inode))
            .map(|s| s.local.port())
            .collect();
        assert!(ports.contains(&port), "{port} not in {ports:?}");
        assert_eq!(listening(&cx, port), Some(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)));
        assert!(live_ports(&cx, true).iter().all(|p| *p != port), "only sshd's own sockets count");
    }
}
