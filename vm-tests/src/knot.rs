//! Knot DNS on 198.18.0.1:53 inside the lab: the authoritative server for the test zones, with
//! SRV records for discovery and RFC 2136 updates (TSIG, hmac-sha256) for self-registration.

use crate::cmd::{self, RunResult};
use crate::lab::{Lab, LabInner};
use crate::network::HOST_ADDR;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// A zone to serve: `records` are zone-file lines relative to the origin, e.g.
/// `"_postgresql._tcp 60 IN SRV 0 0 5432 db1"`, `"db1 60 IN A 198.18.0.11"`.
#[derive(Clone, Debug)]
pub struct Zone {
    pub name: String,
    pub records: Vec<String>,
}

impl Zone {
    pub fn new(name: &str) -> Zone {
        Zone { name: name.trim_end_matches('.').into(), records: Vec::new() }
    }
    pub fn record(mut self, line: &str) -> Zone {
        self.records.push(line.into());
        self
    }
}

/// The TSIG key allowed to update every zone (as `knsupdate -y`/`nsupdate -y` want it:
/// `hmac-sha256:<name>:<secret>`).
#[derive(Clone, Debug)]
pub struct TsigKey {
    pub name: String,
    pub algorithm: String,
    /// Base64.
    pub secret: String,
}

impl TsigKey {
    pub fn to_y_arg(&self) -> String {
        format!("{}:{}:{}", self.algorithm, self.name, self.secret)
    }
}

pub struct Knot {
    lab: Arc<LabInner>,
    child: Option<Child>,
    dir: PathBuf,
    key: TsigKey,
}

impl Knot {
    /// `Lab::start_knot`: writes the configuration and zone files, starts knotd, and waits
    /// until it answers for the first zone.
    pub(crate) fn start(lab: &Lab, zones: &[Zone]) -> Knot {
        assert!(!zones.is_empty(), "knot needs at least one zone");
        let dir = lab.dir().join("knot");
        fs::create_dir_all(dir.join("run")).unwrap();
        fs::create_dir_all(dir.join("db")).unwrap();
        let secret = cmd::run_ok(cmd::host("openssl").args(["rand", "-base64", "32"]), Duration::from_secs(10));
        let key = TsigKey { name: "lab-update".into(), algorithm: "hmac-sha256".into(), secret: secret.trim().into() };

        let mut conf = format!(
            "server:\n    rundir: \"{run}\"\n    listen: {HOST_ADDR}@53\n\n\
             log:\n  - target: stderr\n    any: info\n\n\
             database:\n    storage: \"{db}\"\n\n\
             key:\n  - id: {kid}\n    algorithm: {alg}\n    secret: {sec}\n\n\
             acl:\n  - id: tsig-update\n    key: {kid}\n    action: update\n\n\
             template:\n  - id: default\n    storage: \"{db}\"\n    acl: tsig-update\n\n\
             zone:\n",
            run = dir.join("run").display(),
            db = dir.join("db").display(),
            kid = key.name,
            alg = key.algorithm,
            sec = key.secret
        );
        for z in zones {
            let file = dir.join(format!("{}.zone", z.name));
            fs::write(&file, zone_file(z)).unwrap();
            let _ = writeln!(conf, "  - domain: {}\n    file: \"{}\"", z.name, file.display());
        }
        let conf_path = dir.join("knot.conf");
        fs::write(&conf_path, &conf).unwrap();
        let mut check = cmd::host("knotc");
        check.arg("-c").arg(&conf_path).arg("conf-check");
        cmd::run(&mut check, None, Duration::from_secs(10)).assert_ok(&format!("knotc conf-check\n{conf}"));

        let log = File::create(dir.join("knotd.log")).unwrap();
        let mut c = lab.command("knotd");
        c.arg("-c").arg(&conf_path).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        let child = c.spawn().unwrap_or_else(|e| panic!("cannot start knotd: {e}"));
        let mut knot = Knot { lab: lab.inner.clone(), child: Some(child), dir, key };
        let first = zones[0].name.clone();
        let mut last = None;
        let answered = cmd::poll(Duration::from_secs(20), || {
            if let Ok(Some(status)) = knot.child.as_mut().unwrap().try_wait() {
                panic!("knotd exited ({status}):\n{}", knot.log());
            }
            // A TCP probe first: kdig's shortest timeout is 1 s, too long for polling.
            let listening = lab
                .in_netns(|| TcpStream::connect_timeout(&(HOST_ADDR, 53).into(), Duration::from_millis(200)).is_ok());
            if !listening {
                return None;
            }
            let r = knot.kdig(&["+short", "+timeout=1", "+retry=0", "SOA", &first]);
            let ok = r.success() && !r.stdout.trim().is_empty();
            last = Some(r);
            ok.then_some(())
        });
        if answered.is_none() {
            panic!("knot did not answer within 20s; last kdig: {last:?}\nknotd log:\n{}", knot.log());
        }
        knot
    }

    /// The key nodes use for RFC 2136 updates.
    pub fn tsig_key(&self) -> &TsigKey {
        &self.key
    }

    /// `kdig @198.18.0.1 ARGS` from inside the lab.
    pub fn kdig(&self, args: &[&str]) -> RunResult {
        let mut c = self.lab.netns.command("kdig");
        c.arg(format!("@{HOST_ADDR}")).args(args);
        cmd::run(&mut c, None, Duration::from_secs(10))
    }

    /// The answers for `name`/`rtype` (`+short` form, sorted), e.g. `query("_postgresql._tcp.lab.test", "SRV")`.
    pub fn query(&self, name: &str, rtype: &str) -> Vec<String> {
        let r = self.kdig(&["+short", rtype, name]).assert_ok(&format!("kdig {rtype} {name}"));
        let mut lines: Vec<String> = r.stdout.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
        lines.sort();
        lines
    }

    /// Sends an RFC 2136 update signed with the lab key, e.g.
    /// `update("lab.test", &["add _postgresql._tcp.lab.test. 60 SRV 0 0 5432 db2.lab.test."])`.
    pub fn update(&self, zone: &str, commands: &[&str]) {
        let mut script = format!("server {HOST_ADDR} 53\nzone {zone}.\n");
        for c in commands {
            let _ = writeln!(script, "update {c}");
        }
        script.push_str("send\nquit\n");
        let mut c = self.lab.netns.command("knsupdate");
        c.arg("-y").arg(self.key.to_y_arg());
        cmd::run(&mut c, Some(script.as_bytes()), Duration::from_secs(20)).assert_ok(&format!("knsupdate\n{script}"));
    }

    /// knotd's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("knotd.log")).unwrap_or_default()
    }

    /// PID of the running knotd (`None` once stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stops knotd (also done on Drop).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            cmd::terminate(&mut child, Duration::from_secs(10));
        }
    }
}

fn zone_file(z: &Zone) -> String {
    let mut s = format!(
        "$ORIGIN {}.\n$TTL 60\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A {HOST_ADDR}\n",
        z.name
    );
    for r in &z.records {
        s.push_str(r);
        s.push('\n');
    }
    s
}

impl Drop for Knot {
    fn drop(&mut self) {
        self.stop();
    }
}
