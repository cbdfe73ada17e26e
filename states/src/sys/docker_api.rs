//! Docker Engine's API on its Unix socket (`/run/docker.sock`): what `docker info`, `docker
//! node ls` and `docker swarm init/join/leave` do, without the CLI. A join token never reaches
//! a command line (`docker swarm join --token` would put it in `/proc/PID/cmdline` for every
//! user): it travels in a request body over a root-only socket. No body appears in a message:
//! only the method, the path, the status and Docker's own error text.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::engine::context::Context;

/// The API version spoken: Docker 20.10's (Debian 12); later daemons still accept it.
const VERSION: &str = "v1.41";
/// The most an answer may hold (a node list of a large swarm).
const CAP: usize = 8 << 20;
/// A call that does not answer in this time failed (a join waits for the managers).
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The daemon's unit: asked of systemd before its socket, since connecting to a socket-activated
/// `docker.socket` would start a stopped daemon, and a plan must change nothing.
pub const UNIT: &str = "docker.service";

/// Registers the daemon's unit with the run's one look at systemd (at build time).
pub fn register(cx: &Context) {
    crate::sys::systemd::register(cx, UNIT);
}

/// The run's one look at the swarm from this node.
struct Observed(Option<SwarmInfo>);

/// `swarm_info`, but `None` while the daemon's unit is not active (never started by asking);
/// one call per run for every state that asks (`/info` is the daemon's slowest answer), made
/// again once the run changed anything.
pub fn swarm_info_if_running(cx: &Context) -> Result<Option<SwarmInfo>> {
    let seen = cx.shared.observe(|| {
        if cx.direct() && crate::sys::systemd::status(cx, UNIT)?.active_state != "active" {
            return Ok(Observed(None));
        }
        Ok(Observed(swarm_info(&socket(cx))?))
    })?;
    Ok(seen.0.clone())
}

/// After a change to this node's membership: the next look asks the daemon again.
pub fn invalidate(cx: &Context) {
    cx.shared.invalidate::<Observed>();
}

/// Where the daemon listens on the node.
pub fn socket(cx: &Context) -> PathBuf {
    cx.path("/run/docker.sock")
}

/// An answer: its status and its body as JSON (`Null` when empty or not JSON).
pub struct Answer {
    pub status: u16,
    pub json: Value,
}

impl Answer {
    /// Docker's own error text (`{"message": …}`).
    pub fn message(&self) -> String {
        self.json.get("message").and_then(Value::as_str).unwrap_or("").trim().to_string()
    }
}

/// `method path` (without the version) with an optional JSON body.
pub fn call(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<Answer> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let what = format!("{method} {path} on {}", socket.display());
    rt.block_on(async { tokio::time::timeout(TIMEOUT, request(socket, method, path, body)).await })
        .map_err(|_| anyhow!("{what}: no answer within {}s", TIMEOUT.as_secs()))?
        .with_context(|| what)
}

async fn request(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<Answer> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("/{VERSION}{path}"))
        .header("Host", "docker")
        .header("Content-Type", "application/json")
        .body(Full::new(bytes))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body =
        Limited::new(resp.into_body(), CAP).collect().await.map_err(|e| anyhow!("reading the answer: {e}"))?.to_bytes();
    driver.abort();
    let json = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap_or(Value::Null) };
    Ok(Answer { status, json })
}

/// A call that must succeed (2xx); Docker's message otherwise.
pub fn ok(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let a = call(socket, method, path, body)?;
    if !(200..300).contains(&a.status) {
        bail!("Docker refused {method} {path} ({}): {}", a.status, a.message());
    }
    Ok(a.json)
}

/// What this node is in a swarm, from `GET /info`.
#[derive(Clone, Debug, Default)]
pub struct SwarmInfo {
    /// `inactive`, `pending`, `active`, `error` or `locked`.
    pub state: String,
    pub node_id: String,
    pub node_addr: String,
    /// A manager (it answers the swarm's API).
    pub manager: bool,
    pub managers: u64,
    pub nodes: u64,
    pub cluster_id: String,
    /// The managers this node knows of (`ADDR:PORT`).
    pub remote_managers: Vec<String>,
    pub error: String,
}

/// `GET /info`: `None` when no daemon answers on the socket (not installed or not running).
pub fn swarm_info(socket: &Path) -> Result<Option<SwarmInfo>> {
    if !socket.exists() {
        return Ok(None);
    }
    let a = match call(socket, "GET", "/info", None) {
        Ok(a) => a,
        Err(e) if is_unreachable(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    if a.status != 200 {
        bail!("Docker answered GET /info with {}: {}", a.status, a.message());
    }
    let s = &a.json["Swarm"];
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    Ok(Some(SwarmInfo {
        state: text(&s["LocalNodeState"]),
        node_id: text(&s["NodeID"]),
        node_addr: text(&s["NodeAddr"]),
        manager: s["ControlAvailable"].as_bool().unwrap_or(false),
        managers: s["Managers"].as_u64().unwrap_or(0),
        nodes: s["Nodes"].as_u64().unwrap_or(0),
        cluster_id: text(&s["Cluster"]["ID"]),
        remote_managers: s["RemoteManagers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["Addr"].as_str().map(str::to_string))
            .collect(),
        error: text(&s["Error"]),
    }))
}

/// A refused or missing socket: the daemon is not running.
fn is_unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| matches!(io.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound))
    })
}

/// One node of the swarm as a manager sees it (`GET /nodes`).
#[derive(Clone, Debug)]
pub struct SwarmNode {
    pub id: String,
    pub version: u64,
    pub hostname: String,
    pub manager: bool,
    pub leader: bool,
    /// A manager's `reachable`/`unreachable`; empty for a worker.
    pub reachability: String,
    /// `ready`, `down`, …
    pub status: String,
    pub availability: String,
    pub spec: Value,
}

/// The run's one `GET /nodes`, for the plans that ask (made again once the run changed anything).
pub fn nodes_observed(cx: &Context) -> Result<std::sync::Arc<Vec<SwarmNode>>> {
    cx.shared.observe(|| nodes(&socket(cx)))
}

/// `GET /nodes` (only a manager answers).
pub fn nodes(socket: &Path) -> Result<Vec<SwarmNode>> {
    let json = ok(socket, "GET", "/nodes", None)?;
    Ok(json.as_array().into_iter().flatten().map(node).collect())
}

fn node(n: &Value) -> SwarmNode {
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    SwarmNode {
        id: text(&n["ID"]),
        version: n["Version"]["Index"].as_u64().unwrap_or(0),
        hostname: text(&n["Description"]["Hostname"]),
        manager: n["Spec"]["Role"].as_str() == Some("manager"),
        leader: n["ManagerStatus"]["Leader"].as_bool().unwrap_or(false),
        reachability: text(&n["ManagerStatus"]["Reachability"]),
        status: text(&n["Status"]["State"]),
        availability: text(&n["Spec"]["Availability"]),
        spec: n["Spec"].clone(),
    }
}

/// Change a node's role (`docker node promote`/`demote`).
pub fn set_role(socket: &Path, n: &SwarmNode, role: &str) -> Result<()> {
    let mut spec = n.spec.clone();
    spec["Role"] = Value::String(role.into());
    ok(socket, "POST", &format!("/nodes/{}/update?version={}", n.id, n.version), Some(&spec))?;
    Ok(())
}
