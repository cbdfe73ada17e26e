//! The HTTP-01 responder: a tiny HTTP server on 127.0.0.1:PORT that answers
//! `GET /.well-known/acme-challenge/<token>` with the key authorization, for the duration of
//! one issuance only. The web server on :80 (haproxy) routes that path to it; nothing else is
//! served, and nothing listens between runs.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

pub const PREFIX: &str = "/.well-known/acme-challenge/";

type Answers = Arc<Mutex<HashMap<String, String>>>;

pub struct Responder {
    answers: Answers,
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    /// Listen on 127.0.0.1:`port` (0: any free port, for tests).
    pub fn start(port: u16) -> Result<Responder> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .with_context(|| format!("cannot listen on 127.0.0.1:{port} for ACME HTTP-01 challenges"))?;
        let addr = listener.local_addr()?;
        let answers = Answers::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (answers.clone(), stop.clone());
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let a = a.clone();
                    // One thread per connection: a stalled client must not hold up the CA.
                    thread::spawn(move || serve(conn, &a));
                }
            }
        });
        Ok(Responder { answers, stop, addr, thread: Some(thread) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Before asking the CA (which rate-limits failed validations): does port 80 on this node
    /// route the challenge path for `host` to us? Fails with what went wrong.
    pub fn self_check(&self, host: &str) -> Result<()> {
        let token = format!("bootstrap-self-check-{}", std::process::id());
        self.answer(&token, "ok");
        let what = format!("http://{host}{PREFIX}… via 127.0.0.1:80");
        let mut conn = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, 80).into(), Duration::from_secs(5))
            .with_context(|| {
                format!(
                    "nothing answers on 127.0.0.1:80, where the CA's {PREFIX} requests must reach 127.0.0.1:{}",
                    self.addr.port()
                )
            })?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(conn, "GET {PREFIX}{token} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
        let mut got = String::new();
        std::io::Read::read_to_string(&mut conn, &mut got).with_context(|| format!("no answer to {what}"))?;
        self.answers.lock().unwrap().remove(&token);
        let status = got.lines().next().unwrap_or_default().to_string();
        if !status.contains(" 200 ") || got.split_once("\r\n\r\n").map(|(_, body)| body) != Some("ok") {
            bail!("port 80 does not route {PREFIX} to 127.0.0.1:{} (self-check got `{status}`)", self.addr.port());
        }
        Ok(())
    }

    /// Serve `key_authorization` for `token` from now on.
    pub fn answer(&self, token: &str, key_authorization: &str) {
        self.answers.lock().unwrap().insert(token.to_string(), key_authorization.to_string());
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag and closes the socket.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, answers: &Answers) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&conn);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // Drain the headers; the request has no body.
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
        header.clear();
    }
    let mut parts = line.split_whitespace();
    let answer = match (parts.next(), parts.next()) {
        (Some("GET"), Some(path)) => {
            path.strip_prefix(PREFIX).and_then(|token| answers.lock().unwrap().get(token).cloned())
        }
        _ => None,
    };
    let response = match answer {
        Some(body) => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
    };
    let _ = (&conn).write_all(response.as_bytes());
}
