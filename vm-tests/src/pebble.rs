//! Pebble, Let's Encrypt's test ACME CA, on 198.18.0.1:14000 inside the lab. It validates
//! HTTP-01 on the nodes' port 80 and TLS-ALPN-01 on 443, resolving names through knot.

use crate::cmd;
use crate::lab::{Lab, LabInner};
use crate::network::HOST_ADDR;
use std::fs::{self, File};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub const ACME_PORT: u16 = 14000;
pub const MANAGEMENT_PORT: u16 = 15000;

pub struct Pebble {
    lab: Arc<LabInner>,
    child: Option<Child>,
    dir: PathBuf,
    ca_pem: String,
}

impl Pebble {
    /// `Lab::start_pebble`: a fresh CA and server certificate (made with openssl; pebble ships
    /// none), the configuration, pebble itself; waits until both its ports accept connections.
    pub(crate) fn start(lab: &Lab) -> Pebble {
        let dir = lab.dir().join("pebble");
        fs::create_dir_all(&dir).unwrap();
        make_certificates(&dir);
        let config = format!(
            r#"{{
  "pebble": {{
    "listenAddress": "{HOST_ADDR}:{ACME_PORT}",
    "managementListenAddress": "{HOST_ADDR}:{MANAGEMENT_PORT}",
    "certificate": "{cert}",
    "privateKey": "{key}",
    "httpPort": 80,
    "tlsPort": 443,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }}
}}
"#,
            cert = dir.join("server.pem").display(),
            key = dir.join("server.key").display()
        );
        fs::write(dir.join("pebble.json"), config).unwrap();
        let log = File::create(dir.join("pebble.log")).unwrap();
        let mut c = lab.command("pebble");
        c.arg("-config")
            .arg(dir.join("pebble.json"))
            .arg("-dnsserver")
            .arg(format!("{HOST_ADDR}:53"))
            // No random validation delays, no artificial bad-nonce errors: fast, deterministic.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = c.spawn().unwrap_or_else(|e| panic!("cannot start pebble: {e}"));
        let ca_pem = fs::read_to_string(dir.join("ca.pem")).unwrap();
        let mut pebble = Pebble { lab: lab.inner.clone(), child: Some(child), dir, ca_pem };
        cmd::wait_for("pebble to listen", Duration::from_secs(20), || {
            if let Ok(Some(status)) = pebble.child.as_mut().unwrap().try_wait() {
                panic!("pebble exited ({status}):\n{}", pebble.log());
            }
            let up = |port| {
                lab.in_netns(|| {
                    TcpStream::connect_timeout(&(HOST_ADDR, port).into(), Duration::from_millis(200)).is_ok()
                })
            };
            (up(ACME_PORT) && up(MANAGEMENT_PORT)).then_some(())
        });
        pebble
    }

    /// `https://198.18.0.1:14000/dir`.
    pub fn directory_url(&self) -> String {
        format!("https://{HOST_ADDR}:{ACME_PORT}/dir")
    }

    /// PEM of the CA that signed pebble's own HTTPS certificate: what an ACME client must
    /// trust to talk to the directory (e.g. `curl --cacert`).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// PEM of the root that issues ACME certificates (new at every pebble start), from the
    /// management API, to verify certificates the nodes obtained.
    pub fn issuing_root(&self) -> String {
        self.management_get("/roots/0")
    }

    /// GET on the management API (https://198.18.0.1:15000), verified against `ca_pem`.
    /// `openssl s_client` so the host needs no curl and the library no TLS stack.
    pub fn management_get(&self, path: &str) -> String {
        let mut c = self.lab.netns.command("openssl");
        c.args(["s_client", "-quiet", "-verify_return_error", "-connect", &format!("{HOST_ADDR}:{MANAGEMENT_PORT}")])
            .arg("-CAfile")
            .arg(self.dir.join("ca.pem"));
        let request = format!("GET {path} HTTP/1.0\r\nHost: {HOST_ADDR}\r\n\r\n");
        let r = cmd::run(&mut c, Some(request.as_bytes()), Duration::from_secs(20))
            .assert_ok(&format!("GET {path} from pebble"));
        let (head, body) =
            r.stdout.split_once("\r\n\r\n").unwrap_or_else(|| panic!("bad HTTP response from pebble:\n{}", r.stdout));
        assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "pebble GET {path}: {head}");
        body.to_string()
    }

    /// pebble's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    /// PID of the running pebble (`None` once stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stops pebble (also done on Drop).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            cmd::terminate(&mut child, Duration::from_secs(10));
        }
    }
}

/// A CA and a server certificate for 198.18.0.1 (Go's TLS insists on subjectAltName).
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let mut c = cmd::host("openssl");
        c.args(args).current_dir(dir);
        cmd::run_ok(&mut c, Duration::from_secs(30));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "30",
        "-subj",
        "/CN=vm-tests lab CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=pebble",
    ]);
    fs::write(
        dir.join("server.ext"),
        format!("subjectAltName=IP:{HOST_ADDR},DNS:pebble,DNS:pebble.lab.test,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"),
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "30",
        "-extfile",
        "server.ext",
    ]);
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}
