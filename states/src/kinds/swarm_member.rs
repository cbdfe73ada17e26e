//! `swarm_member`: this node is in the fleet's Docker Swarm. It observes before it acts
//! (`GET /info` on Docker's socket): a node in a swarm is left alone; a node in none finds
//! the managers registered in DNS (`peers`, from `_swarm-manager._tcp`) and joins through them,
//! as a manager while fewer than `managers` are registered, else as a worker; with none
//! registered (an authoritative answer, never a failed lookup) it initialises the swarm on its
//! private address. Join tokens are optional secrets: the first manager needs none, and a node
//! that needs one and lacks it says which, and where to get it. They travel to Docker in a
//! request body on its root-only socket, never on a command line.
//!
//! While the node is a manager it keeps `marker` (a file), so the `dns_record` of
//! `_swarm-manager._tcp` (`while_exists = marker`) registers exactly the managers. The swarm's
//! leader keeps the number of managers: below `managers` (one left or was demoted), it
//! promotes a ready worker.
//!
//! Leaving (`bootstrap decommission`, `leave = true`): a worker leaves; a manager first checks
//! the quorum (the managers that would stay reachable must be a majority of those that would
//! stay), refuses with the numbers when it would break it, else demotes itself and leaves.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use nix::errno::Errno;
use nix::unistd::{unlinkat, UnlinkatFlags};
use serde::Deserialize;
use serde_json::json;

use crate::engine::atomic;
use crate::engine::beneath;
use crate::engine::build::{managed_path, params, Builder};
use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State};
use crate::sys::dns_client;
use crate::sys::docker_api::{self, SwarmInfo, SwarmNode};

/// How long a demotion or a promotion may take to show in the node list.
const ROLE_WAIT: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// The node's host name (its own SRV record is not another manager).
    name: String,
    /// The private address the swarm's traffic uses (`--advertise-addr`).
    advertise_addr: String,
    /// Managers the swarm keeps (odd: 1, 3, 5, 7).
    #[serde(default = "default_managers")]
    managers: u64,
    /// Managers registered in DNS, as `ADDRESS:PORT`, separated by spaces (this node's own is
    /// ignored). Empty: none is registered.
    #[serde(default)]
    peers: String,
    /// The fleet's DNS server and the managers' SRV name: asked directly before initialising.
    registry_server: String,
    registry_name: String,
    /// NAMES of the secrets holding the join tokens.
    manager_token: String,
    worker_token: String,
    /// Kept while this node is a manager (read by the `_swarm-manager` record's state).
    marker: String,
    #[serde(default)]
    leave: bool,
}

fn default_managers() -> u64 {
    3
}

pub fn build(t: toml::Table, b: &mut Builder) -> Result<Box<dyn State>> {
    let p: Params = params(t)?;
    docker_api::register(b.cx);
    let addr: std::net::IpAddr =
        p.advertise_addr.parse().map_err(|_| anyhow!("`advertise_addr` `{}` is not an IP address", p.advertise_addr))?;
    if !(1..=7).contains(&p.managers) || p.managers.is_multiple_of(2) {
        bail!("`managers` = {}: a swarm keeps an odd number of managers, 1 to 7 (3 survives the loss of one)", p.managers);
    }
    if p.name.is_empty() || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
        bail!("`name` `{}` is not a host name", p.name);
    }
    let own = std::net::SocketAddr::new(addr, 2377).to_string();
    let mut peers = Vec::new();
    for peer in p.peers.split_whitespace() {
        let a: std::net::SocketAddr =
            peer.parse().map_err(|_| anyhow!("`peers`: `{peer}` is not an ADDRESS:PORT"))?;
        if a.to_string() != own {
            peers.push(a.to_string());
        }
    }
    let registry_server = dns_client::parse_server(&p.registry_server)
        .map_err(|e| anyhow!("`registry_server` (the swarm role needs `dns_server` and `dns_zone`): {e:#}"))?;
    let registry_name = dns_client::fqdn(&p.registry_name).map_err(|e| anyhow!("`registry_name`: {e:#}"))?;
    Ok(Box::new(SwarmMember {
        name: p.name,
        addr: addr.to_string(),
        managers: p.managers,
        peers,
        registry_server,
        registry_name,
        manager_token: p.manager_token,
        worker_token: p.worker_token,
        marker: managed_path(std::path::Path::new(&p.marker))?,
        leave: p.leave,
    }))
}

struct SwarmMember {
    name: String,
    addr: String,
    managers: u64,
    peers: Vec<String>,
    registry_server: std::net::SocketAddr,
    registry_name: hickory_resolver::proto::rr::Name,
    manager_token: String,
    worker_token: String,
    marker: PathBuf,
    leave: bool,
}

enum Op {
    Init,
    Join { manager: bool, via: Vec<String> },
    /// A failed join left the node in `error`: leave it, then join again.
    Reset,
    /// Docker does not run (yet, in a dry run of a fresh node): nothing to join with.
    NoDocker,
    Mark(bool),
    Promote { id: String, hostname: String },
    /// The leader: more managers than configured (two nodes joined at once).
    Demote { id: String, hostname: String },
    /// `force`: the swarm's only node, or a membership that never completed.
    Leave { demote: bool, force: bool },
}

impl SwarmMember {
    /// A positive answer that no manager is registered but this node.
    fn none_registered(&self) -> Result<()> {
        let others = dns_client::other_srv_targets(self.registry_server, &self.registry_name, &self.name).map_err(|e| {
            anyhow!("can't tell whether a swarm exists ({e:#}): not initialising a new one; retry when DNS answers")
        })?;
        if !others.is_empty() {
            bail!(
                "swarm managers are registered in DNS ({}) but discovery gave none this run: not initialising a second swarm; retry",
                others.join(", ")
            );
        }
        Ok(())
    }

    fn token<'a>(&self, cx: &'a Context, manager: bool) -> Result<&'a str> {
        let (name, role) = if manager { (&self.manager_token, "manager") } else { (&self.worker_token, "worker") };
        let token = cx.secrets.get(name).ok_or_else(|| {
            anyhow!(
                "this node joins the swarm as a {role}: its join token is needed. On a manager run \
                 `docker swarm join-token -q {role}`, then here `bootstrap secret set {name}` (or give \
                 BOOTSTRAP_SECRET_{} at install)",
                name.to_uppercase()
            )
        })?;
        if !token.starts_with("SWMTKN-1-") {
            bail!("secret `{name}` is not a swarm join token (they start with SWMTKN-1-)");
        }
        Ok(token)
    }

    fn plan_member(&self, cx: &Context, info: &SwarmInfo, plan: &mut Plan) -> Result<()> {
        let marked = self.marked(cx)?;
        if info.manager != marked {
            let what = if info.manager { "record that this node is a swarm manager (its DNS record follows)" } else { "record that this node is no longer a swarm manager" };
            plan.push(Change::new(what, Op::Mark(info.manager)));
        }
        if !info.manager {
            return Ok(());
        }
        let nodes = docker_api::nodes_observed(cx)?;
        let me_leader = nodes.iter().any(|n| n.id == info.node_id && n.leader);
        let managers = nodes.iter().filter(|n| n.manager).count() as u64;
        if me_leader && managers < self.managers {
            if let Some(w) = nodes.iter().find(|n| !n.manager && n.status == "ready" && n.availability == "active") {
                plan.push(Change::new(
                    format!("promote {} to manager ({managers} of {} managers)", w.hostname, self.managers),
                    Op::Promote { id: w.id.clone(), hostname: w.hostname.clone() },
                ));
            }
        }
        if me_leader && managers > self.managers {
            // The newest reachable follower goes back to being a worker.
            if let Some(m) = nodes.iter().rev().find(|n| n.manager && !n.leader && n.reachability == "reachable") {
                plan.push(Change::new(
                    format!("demote {} to worker ({managers} managers, {} configured)", m.hostname, self.managers),
                    Op::Demote { id: m.id.clone(), hostname: m.hostname.clone() },
                ));
            }
        }
        Ok(())
    }

    fn plan_join(&self, cx: &Context, plan: &mut Plan) -> Result<()> {
        if self.peers.is_empty() {
            self.none_registered()?;
            plan.push(Change::new(
                format!("initialise a new swarm on {} (no manager is registered in DNS)", self.addr),
                Op::Init,
            ));
            plan.push(Change::new("record that this node is a swarm manager (its DNS record follows)", Op::Mark(true)));
            return Ok(());
        }
        let manager = (self.peers.len() as u64) < self.managers;
        let role = if manager { "manager" } else { "worker" };
        // Said now, so `--check` shows it and nothing is reset first for a join that can't be.
        self.token(cx, manager)?;
        plan.push(Change::new(
            format!(
                "join the swarm as a {role} through {} ({} of {} managers registered)",
                self.peers.join(", "),
                self.peers.len(),
                self.managers
            ),
            Op::Join { manager, via: self.peers.clone() },
        ));
        if manager {
            plan.push(Change::new("record that this node is a swarm manager (its DNS record follows)", Op::Mark(true)));
        } else if self.marked(cx)? {
            plan.push(Change::new("record that this node is no longer a swarm manager", Op::Mark(false)));
        }
        Ok(())
    }

    /// Leaving: a manager only when the rest keep their quorum.
    fn plan_leave(&self, cx: &Context, info: &SwarmInfo, plan: &mut Plan) -> Result<()> {
        if !info.manager {
            plan.push(Change::new("leave the swarm (a worker)", Op::Leave { demote: false, force: false }));
            return Ok(());
        }
        let nodes = docker_api::nodes_observed(cx)?;
        let managers: Vec<&SwarmNode> = nodes.iter().filter(|n| n.manager).collect();
        let reachable = managers.iter().filter(|n| n.reachability == "reachable").count();
        let (m, r) = (managers.len(), reachable);
        if m == 1 {
            let others = nodes.len() - 1;
            if others > 0 {
                bail!(
                    "refused: this is the swarm's last manager; leaving would end the swarm for its {others} other node(s). \
                     Promote another node first (`docker node promote`), or decommission the others first"
                );
            }
            plan.push(Change::new("leave the swarm (its only node: the swarm ends)", Op::Leave { demote: false, force: true }));
            return Ok(());
        }
        if !keeps_quorum(m, r) {
            let down: Vec<&str> =
                managers.iter().filter(|n| n.reachability != "reachable").map(|n| n.hostname.as_str()).collect();
            bail!(
                "refused: leaving would break the swarm's quorum: {r} of {m} managers are reachable now, {} of {} would be \
                 after. Bring back {} first, or demote/remove what is gone for good (`docker node demote`, `docker node rm`)",
                r.saturating_sub(1),
                m - 1,
                if down.is_empty() { "the unreachable managers".to_string() } else { down.join(", ") }
            );
        }
        plan.push(Change::new(
            format!("demote this manager ({r} of {m} reachable; {} of {} after), then leave the swarm", r.saturating_sub(1), m - 1),
            Op::Leave { demote: true, force: false },
        ));
        if self.marked(cx)? {
            plan.push(Change::new("record that this node is no longer a swarm manager", Op::Mark(false)));
        }
        Ok(())
    }

    /// Whether the marker is there, looked at where `mark` reaches it.
    fn marked(&self, cx: &Context) -> Result<bool> {
        let Some((dir, name)) = beneath::find_parent(cx, &self.marker, None)? else { return Ok(false) };
        Ok(beneath::lstat_at(&dir, &name)?.is_some())
    }

    /// Written or removed through its directory, reached without following a link (`beneath`).
    fn mark(&self, cx: &Context, on: bool) -> Result<()> {
        if on {
            let (dir, name) = beneath::open_parent(cx, &self.marker, Some(0o755), None)?;
            return atomic::write_plain(&dir.join(&name), b"manager\n", 0o644);
        }
        let Some((dir, name)) = beneath::find_parent(cx, &self.marker, None)? else { return Ok(()) };
        match unlinkat(&dir, name.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(anyhow!("cannot remove {}: {e}", self.marker.display())),
        }
    }

    /// Waits until the node list shows `id` with the role `manager` (and reachable, for one).
    fn wait_role(&self, cx: &Context, id: &str, manager: bool) -> Result<()> {
        let t = Instant::now();
        while t.elapsed() < ROLE_WAIT {
            let ok = docker_api::nodes(&docker_api::socket(cx))
                .ok()
                .and_then(|ns| ns.into_iter().find(|n| n.id == id))
                .is_some_and(|n| n.manager == manager && (!manager || n.reachability == "reachable"));
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        bail!("the swarm did not show node {id} as a {} within {}s", if manager { "manager" } else { "worker" }, ROLE_WAIT.as_secs())
    }
}

/// Whether `managers` managers, `reachable` of them reachable (this one among them), keep their
/// quorum once this one leaves: Raft needs a majority of the managers that stay.
fn keeps_quorum(managers: usize, reachable: usize) -> bool {
    let (stay, up) = (managers.saturating_sub(1), reachable.saturating_sub(1));
    up * 2 > stay
}

impl State for SwarmMember {
    fn claims(&self) -> Vec<Claim> {
        vec![Claim::path(&self.marker)]
    }

    fn target(&self) -> String {
        format!("{} ({})", self.name, self.addr)
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        let mut plan = Plan::default();
        let marked = self.marked(cx)?;
        let mut info = docker_api::swarm_info_if_running(cx)?;
        // Right after a restart (a new daemon.json) a member says `pending` for a moment.
        let t = Instant::now();
        while info.as_ref().is_some_and(|i| i.state == "pending") && t.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(500));
            docker_api::invalidate(cx);
            info = docker_api::swarm_info_if_running(cx)?;
        }
        let info = match info {
            Some(i) => i,
            None if self.leave && marked => bail!(
                "refused: Docker is not running, so this manager can't demote itself and leave. Start Docker \
                 (`systemctl start docker`), or demote and remove it on another manager (`docker node demote`, `docker node rm`)"
            ),
            None if self.leave => return Ok(plan),
            None => {
                if !cx.is_live() {
                    return Ok(plan);
                }
                plan.push(Change::new("join or initialise the swarm once Docker runs (it does not yet)", Op::NoDocker));
                return Ok(plan);
            }
        };
        match info.state.as_str() {
            "active" if self.leave => self.plan_leave(cx, &info, &mut plan)?,
            "active" => self.plan_member(cx, &info, &mut plan)?,
            "inactive" if self.leave => {
                if marked {
                    plan.push(Change::new("record that this node is no longer a swarm manager", Op::Mark(false)));
                }
            }
            "inactive" => self.plan_join(cx, &mut plan)?,
            "locked" => bail!("the swarm is locked on this node (autolock): unlock it with `docker swarm unlock`"),
            // A join that never completed (no manager marker): left with force.
            "pending" | "error" if self.leave && !marked => plan.push(Change::new(
                format!("leave the unfinished membership ({})", info.state),
                Op::Leave { demote: false, force: true },
            )),
            "pending" => bail!("this node's swarm membership is pending (joining): retry shortly"),
            // Only a join that never completed is reset; a member in trouble is the operator's.
            "error" if !self.leave && !marked && info.cluster_id.is_empty() => {
                plan.push(Change::new(
                    format!("leave the failed membership ({}), then join again", info.error),
                    Op::Reset,
                ));
                self.plan_join(cx, &mut plan)?;
            }
            "error" => bail!("Docker reports this node's swarm membership in error: {}", info.error),
            other => bail!("Docker reports the swarm state `{other}` on this node ({})", info.error),
        }
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        cx.require_live("swarm membership")?;
        docker_api::invalidate(cx);
        let socket = docker_api::socket(cx);
        for op in plan.ops::<Op>() {
            match op {
                Op::Init => {
                    let body = json!({ "ListenAddr": "0.0.0.0:2377", "AdvertiseAddr": self.addr, "DataPathAddr": self.addr });
                    docker_api::ok(&socket, "POST", "/swarm/init", Some(&body))?;
                }
                Op::Join { manager, via } => {
                    let token = self.token(cx, *manager)?;
                    let body = json!({
                        "ListenAddr": "0.0.0.0:2377",
                        "AdvertiseAddr": self.addr,
                        "DataPathAddr": self.addr,
                        "RemoteAddrs": via,
                        "JoinToken": token,
                    });
                    docker_api::ok(&socket, "POST", "/swarm/join", Some(&body))?;
                }
                Op::NoDocker => bail!("Docker is not running on this node: can't join the swarm"),
                Op::Reset => {
                    let a = docker_api::call(&socket, "POST", "/swarm/leave?force=true", None)?;
                    if a.status >= 300 && a.status != 503 {
                        bail!("Docker refused to leave the failed membership ({}): {}", a.status, a.message());
                    }
                }
                Op::Mark(on) => self.mark(cx, *on)?,
                Op::Promote { id, hostname } | Op::Demote { id, hostname } => {
                    let manager = matches!(op, Op::Promote { .. });
                    let n = docker_api::nodes(&socket)?
                        .into_iter()
                        .find(|n| &n.id == id)
                        .ok_or_else(|| anyhow!("node {hostname} is no longer in the swarm"))?;
                    docker_api::set_role(&socket, &n, if manager { "manager" } else { "worker" })?;
                    self.wait_role(cx, id, manager)?;
                }
                Op::Leave { demote, force } => {
                    if *demote {
                        let info = docker_api::swarm_info(&socket)?.ok_or_else(|| anyhow!("Docker stopped"))?;
                        let me = docker_api::nodes(&socket)?
                            .into_iter()
                            .find(|n| n.id == info.node_id)
                            .ok_or_else(|| anyhow!("this node is not in the swarm's node list"))?;
                        docker_api::set_role(&socket, &me, "worker")?;
                        let t = Instant::now();
                        while docker_api::swarm_info(&socket)?.is_some_and(|i| i.manager) {
                            if t.elapsed() > ROLE_WAIT {
                                bail!("this node was demoted but still acts as a manager after {}s", ROLE_WAIT.as_secs());
                            }
                            std::thread::sleep(Duration::from_millis(300));
                        }
                    }
                    let path = if *force { "/swarm/leave?force=true" } else { "/swarm/leave" };
                    docker_api::ok(&socket, "POST", path, None)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::keeps_quorum;

    #[test]
    fn a_manager_leaves_only_when_the_rest_keep_a_majority() {
        assert!(keeps_quorum(3, 3), "3 of 3: 2 of 2 stay");
        assert!(!keeps_quorum(3, 2), "one down: 1 of 2 would stay");
        assert!(keeps_quorum(5, 4), "one down of 5: 3 of 4 stay");
        assert!(!keeps_quorum(5, 3), "two down of 5: 2 of 4 would stay");
        assert!(keeps_quorum(2, 2), "2 of 2: 1 of 1 stays");
        assert!(!keeps_quorum(2, 1));
    }
}
