//! A real authoritative DNS server for the discovery and dns_record tests: knotd on 127.0.0.1
//! at a free high port, from a temporary directory, with a TSIG key allowed to update the zone
//! (the same shape as the lab's, vm-tests/src/knot.rs). Stopped by its PID on drop.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const KEY_NAME: &str = "test-update";
/// 32 random bytes, base64: a test key, not a secret of anything real.
pub const KEY_SECRET: &str = "3ujBqvdTEt3xY7GmmP65oUr0VBOt10w1dLAx3jK7RxI=";

pub struct Knot {
    pub addr: SocketAddr,
    pub zone: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
    conf: PathBuf,
}

/// A port free for both UDP and TCP right now.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Knot {
    /// Serve `zone` with `records` (zone-file lines relative to the origin).
    pub fn start(zone: &str, records: &[&str]) -> Knot {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut zf = format!(
            "$ORIGIN {zone}.\n$TTL 60\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A 127.0.0.1\n"
        );
        for r in records {
            let _ = writeln!(zf, "{r}");
        }
        let zone_path = dir.path().join(format!("{zone}.zone"));
        std::fs::write(&zone_path, zf).unwrap();
        let d = dir.path().display();
        let conf = format!(
            "server:\n    rundir: \"{d}\"\n    listen: {ip}@{port}\n\n\
             log:\n  - target: stderr\n    any: info\n\n\
             database:\n    storage: \"{d}\"\n\n\
             key:\n  - id: {KEY_NAME}\n    algorithm: hmac-sha256\n    secret: {KEY_SECRET}\n\n\
             acl:\n  - id: upd\n    key: {KEY_NAME}\n    action: update\n\n\
             zone:\n  - domain: {zone}\n    file: \"{}\"\n    storage: \"{d}\"\n    acl: upd\n",
            zone_path.display(),
            ip = addr.ip(),
            port = addr.port(),
        );
        let conf_path = dir.path().join("knot.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut k = Knot { addr, zone: zone.into(), child: None, dir, conf: conf_path };
        k.spawn();
        k
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("knotd.log")).unwrap();
        let child = Command::new("knotd")
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("knotd (apt-get install knot)");
        self.child = Some(child);
        let t = Instant::now();
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_ok()
                && !self.query(&self.zone.clone(), "SOA").is_empty()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.as_mut().unwrap().try_wait() {
                panic!("knotd exited ({status}): {}", self.log());
            }
            assert!(t.elapsed() < Duration::from_secs(20), "knotd did not answer: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("knotd.log")).unwrap_or_default()
    }

    /// `kdig +short` answers, sorted.
    pub fn query(&self, name: &str, rtype: &str) -> Vec<String> {
        let out = Command::new("kdig")
            .arg(format!("@{}", self.addr.ip()))
            .arg("-p")
            .arg(self.addr.port().to_string())
            .args(["+short", "+timeout=1", "+retry=0", rtype, name])
            .output()
            .unwrap();
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        v.sort();
        v
    }

    /// An RFC 2136 update with knsupdate, e.g. `add db2.lab.test. 60 A 127.0.0.22`.
    pub fn update(&self, commands: &[&str]) {
        let mut script = format!("server {} {}\nzone {}.\n", self.addr.ip(), self.addr.port(), self.zone);
        for c in commands {
            let _ = writeln!(script, "update {c}");
        }
        script.push_str("send\nquit\n");
        let mut child = Command::new("knsupdate")
            .arg("-y")
            .arg(format!("hmac-sha256:{KEY_NAME}:{KEY_SECRET}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "knsupdate failed:\n{script}\n{}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM: knotd flushes its journal and exits.
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
    }

    /// Start again on the same address, with the zone as updated so far.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        self.stop();
    }
}
