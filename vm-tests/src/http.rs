//! A tiny HTTP/1.0 file server on the lab host address, so a node can fetch the binary with
//! `wget http://198.18.0.1:PORT/bootstrap` exactly as an operator would.
//!
//! It runs as a thread of the test process: the listening socket is created by a thread that
//! joined the lab's namespace, and stays in that namespace wherever it is used afterwards.

use crate::lab::{Lab, LabInner};
use crate::network::HOST_ADDR;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

type Files = Arc<Mutex<HashMap<String, Arc<Vec<u8>>>>>;

pub struct HttpServer {
    _lab: Arc<LabInner>,
    port: u16,
    files: Files,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// `Lab::http_server`: binds the listener inside the lab's namespace and starts the
    /// accepting thread.
    pub(crate) fn start(lab: &Lab, port: u16) -> HttpServer {
        let listener = lab
            .in_netns(|| TcpListener::bind((HOST_ADDR, port)))
            .unwrap_or_else(|e| panic!("cannot listen on {HOST_ADDR}:{port} in lab {}: {e}", lab.name()));
        let port = listener.local_addr().unwrap().port();
        // Non-blocking accept, polled, so Drop can stop the loop without a wake-up connection.
        listener.set_nonblocking(true).unwrap();
        let files: Files = Default::default();
        let requests: Arc<Mutex<Vec<String>>> = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (files, requests, stop) = (files.clone(), requests.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let (files, requests) = (files.clone(), requests.clone());
                            thread::spawn(move || {
                                let _ = serve(conn, &files, &requests);
                            });
                        }
                        // Polled often: a site bundle's conditional request is timed through this server.
                        Err(_) => thread::sleep(Duration::from_millis(1)),
                    }
                }
            })
        };
        HttpServer { _lab: lab.inner.clone(), port, files, requests, stop, thread: Some(thread) }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://198.18.0.1:PORT/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{HOST_ADDR}:{}/{}", self.port, path.trim_start_matches('/'))
    }

    /// Serves `contents` at `path` (replacing what was there).
    pub fn put(&self, path: &str, contents: impl Into<Vec<u8>>) {
        let key = format!("/{}", path.trim_start_matches('/'));
        self.files.lock().unwrap().insert(key, Arc::new(contents.into()));
    }

    /// Serves a host file's current contents at `path`.
    pub fn put_file(&self, path: &str, host_file: &Path) {
        let data = std::fs::read(host_file).unwrap_or_else(|e| panic!("read {}: {e}", host_file.display()));
        self.put(path, data);
    }

    /// Stops serving `path` (it answers 404 from now on).
    pub fn remove(&self, path: &str) {
        self.files.lock().unwrap().remove(&format!("/{}", path.trim_start_matches('/')));
    }

    /// Request lines received so far ("GET /bootstrap 200"), to assert what was downloaded.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, files: &Files, requests: &Mutex<Vec<String>>) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut if_none_match = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("if-none-match") {
                if_none_match = Some(value.trim().to_string());
            }
        }
    }
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let body = files.lock().unwrap().get(path).cloned();
    // An entity tag of the content, so conditional requests (site bundles) get a 304.
    let etag = body.as_ref().map(|b| format!("\"{:016x}\"", fnv(b)));
    let (status, body) = match (method, body) {
        ("GET", Some(_)) if if_none_match.is_some() && if_none_match == etag => {
            ("304 Not Modified", Arc::new(Vec::new()))
        }
        ("GET" | "HEAD", Some(b)) => ("200 OK", b),
        ("GET" | "HEAD", None) => ("404 Not Found", Arc::new(b"not found\n".to_vec())),
        _ => ("405 Method Not Allowed", Arc::new(Vec::new())),
    };
    requests.lock().unwrap().push(format!("{method} {path} {}", &status[..3]));
    let mut out = conn;
    let etag = etag.map(|e| format!("ETag: {e}\r\n")).unwrap_or_default();
    write!(
        out,
        "HTTP/1.0 {status}\r\n{etag}Content-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        out.write_all(&body)?;
    }
    out.flush()
}

/// FNV-1a, 64 bit: enough to tell contents apart for an entity tag.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}
