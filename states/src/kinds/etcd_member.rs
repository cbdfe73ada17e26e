//! `etcd_member`: this node is a member of the fleet's etcd cluster. It observes before it
//! acts: a node with member data is left alone (etcd itself is a `service` state); a node
//! without asks the members registered in DNS (`peers`), then forms a new cluster only when
//! none is registered, joins a running one (member add, then start with state `existing`),
//! or replaces its own former self (a node rebuilt under the same name: remove, add, join).
//!
//! It writes the unit's initial-cluster file (`file`, read by a drop-in that also makes it a
//! start condition, so the package can't start etcd before this state decided how) and starts
//! the unit itself: an added member counts towards the quorum at once, so it must start right
//! after. A data directory without member data is moved aside, never reused for a join.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use nix::fcntl::renameat;
use serde::Deserialize;

use crate::engine::atomic::{write_file, FileWrite};
use crate::engine::beneath;
use crate::engine::build::{managed_path, params, Builder};
use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State};
use crate::engine::runner::Cmd;
use crate::sys::dns_client;
use crate::sys::etcd::{self, Member};
use crate::sys::systemd;


/// The user Debian's etcd runs as, whose directories hold its data.
const ETCD_USER: &str = "etcd";
/// How long a started member may take to say it is healthy (a joining one catches up first).
const START_WAIT: Duration = Duration::from_secs(90);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// The member's name (`ETCD_NAME`): the node's host name.
    name: String,
    /// This member's peer URL (`http://ADDRESS:2380`).
    peer_url: String,
    /// This member's client URL (`http://ADDRESS:2379`), asked whether it is healthy.
    client_url: String,
    /// Client URLs of the members registered in DNS, separated by spaces (this node's own is
    /// ignored). Empty: no other member exists, so a new cluster is formed.
    #[serde(default)]
    peers: String,
    #[serde(default = "default_data_dir")]
    data_dir: String,
    /// The initial-cluster environment file this state writes.
    file: String,
    /// The fleet's DNS server (`HOST:PORT`, authoritative) and the SRV name members register
    /// (`_etcd-client._tcp.ZONE`): before forming a new cluster, an authoritative answer must
    /// say that no other member is registered. A failed lookup never forms one.
    registry_server: String,
    registry_name: String,
    #[serde(default = "default_unit")]
    unit: String,
    /// Leave instead (`bootstrap decommission`): remove this member from the cluster, stop
    /// etcd, set its data aside (a removed member's data can never start again).
    #[serde(default)]
    leave: bool,
}

fn default_data_dir() -> String {
    "/var/lib/etcd/default".into()
}

fn default_unit() -> String {
    "etcd.service".into()
}

pub fn build(t: toml::Table, _b: &mut Builder) -> Result<Box<dyn State>> {
    let p: Params = params(t)?;
    for (what, url) in [("peer_url", &p.peer_url), ("client_url", &p.client_url)] {
        check_url(what, url)?;
    }
    let peers: Vec<String> = p.peers.split_whitespace().map(str::to_string).collect();
    for url in &peers {
        check_url("peers", url)?;
    }
    if p.name.is_empty() || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
        bail!("`name` `{}` is not a host name", p.name);
    }
    let others = peers.into_iter().filter(|u| *u != p.client_url).collect();
    let registry_server = dns_client::parse_server(&p.registry_server)
        .map_err(|e| anyhow!("`registry_server` (db_ha needs `dns_server` and `dns_zone`): {e:#}"))?;
    let registry_name = dns_client::fqdn(&p.registry_name).map_err(|e| anyhow!("`registry_name`: {e:#}"))?;
    Ok(Box::new(EtcdMember {
        name: p.name,
        peer_url: p.peer_url,
        client_url: p.client_url,
        others,
        data_dir: managed_path(Path::new(&p.data_dir))?,
        file: managed_path(Path::new(&p.file))?,
        unit: p.unit,
        leave: p.leave,
        registry_server,
        registry_name,
    }))
}

fn check_url(what: &str, url: &str) -> Result<()> {
    let ok = url.strip_prefix("http://").is_some_and(|rest| {
        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || ".:-[]".contains(c))
    });
    if !ok {
        bail!("`{what}`: `{url}` is not an http://HOST:PORT URL");
    }
    Ok(())
}

struct EtcdMember {
    name: String,
    peer_url: String,
    client_url: String,
    others: Vec<String>,
    data_dir: PathBuf,
    file: PathBuf,
    unit: String,
    leave: bool,
    registry_server: std::net::SocketAddr,
    registry_name: hickory_resolver::proto::rr::Name,
}

enum Op {
    /// Remove this member (through `via`) unless it is the last one; then stop and set aside.
    Leave { via: Option<String>, id: Option<String> },
    /// Only the file is missing (member data exists): it says `existing`, and etcd ignores it.
    File,
    New,
    Join { via: String, replace: Option<String>, added: bool },
}

impl EtcdMember {
    /// What etcd itself checks (`wal.Exist`): a WAL file. A failed first start leaves
    /// `member/snap` behind but no WAL, and such a directory is set aside, not reused.
    fn has_member_data(&self, cx: &Context) -> bool {
        std::fs::read_dir(cx.path(&self.data_dir).join("member/wal"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".wal"))
    }

    /// A positive answer that no other member exists: the fleet's DNS server, asked directly
    /// and authoritatively, lists no `_etcd-client` record but this node's. Discovery alone
    /// can't tell "none" from "lookup failed on a first install".
    fn none_registered(&self) -> Result<()> {
        let others = dns_client::other_srv_targets(self.registry_server, &self.registry_name, &self.name).map_err(|e| {
            anyhow!("can't tell whether an etcd cluster exists ({e:#}): not forming a new one; retry when DNS answers")
        })?;
        if !others.is_empty() {
            bail!(
                "etcd members are registered in DNS ({}) but discovery gave none this run: not forming a second cluster; retry",
                others.join(", ")
            );
        }
        Ok(())
    }

    /// A data directory with anything in it (without member data: what a join moves aside).
    fn has_leftover_data(&self, cx: &Context) -> bool {
        std::fs::read_dir(cx.path(&self.data_dir)).is_ok_and(|mut d| d.next().is_some())
    }

    /// Said in the plan: a leftover data directory (without member data) is moved aside.
    fn aside_note(&self, cx: &Context) -> &'static str {
        if self.has_leftover_data(cx) { "; the leftover data directory is moved aside first" } else { "" }
    }

    fn write(&self, cx: &Context, state: &str, cluster: &str) -> Result<()> {
        let text = format!(
            "# Written by bootstrap (etcd_member): how this member first started. etcd reads it only\n\
             # while its data directory is empty.\nETCD_INITIAL_CLUSTER={cluster}\nETCD_INITIAL_CLUSTER_STATE={state}\n"
        );
        write_file(cx, &self.file, text.as_bytes(), &FileWrite { uid: Some(0), gid: Some(0), mode: 0o644, validate: None, secret: false })
    }

    /// A data directory without member data (a failed first start) is moved aside, renamed
    /// within its parent, reached without following a link (`beneath`).
    fn set_aside_data(&self, cx: &Context) -> Result<()> {
        let abs = self.data_dir.as_path();
        // The data directory and the one holding it are etcd's (Debian's etcd.service runs as
        // `etcd`): directories of that user may be on the way, no other's.
        let etcd = crate::sys::accounts::Accounts::get(cx)?.user(ETCD_USER).map(|u| u.uid);
        let Some((dir, name)) = beneath::find_parent(cx, abs, etcd)? else { return Ok(()) };
        if !std::fs::read_dir(dir.join(&name)).is_ok_and(|mut d| d.next().is_some()) {
            return Ok(());
        }
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let aside = Path::new(&name).with_extension(format!("set-aside-{secs}"));
        renameat(&dir, name.as_str(), &dir, aside.as_path())
            .map_err(|e| anyhow!("cannot move {} aside: {e}", abs.display()))?;
        let aside = abs.with_file_name(aside);
        tracing::warn!("moved {} aside to {} (never reused for a join)", abs.display(), aside.display());
        Ok(())
    }

    fn start(&self, cx: &Context) -> Result<()> {
        cx.runner.check(&Cmd::new("systemctl").args(["start", self.unit.as_str()]))?;
        systemd::invalidate(cx);
        let c = etcd::client()?;
        let t = Instant::now();
        while t.elapsed() < START_WAIT {
            if etcd::healthy(&c, &self.client_url) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        bail!("etcd started but did not report healthy at {} within {}s", self.client_url, START_WAIT.as_secs())
    }

    /// Leaving: through any member that answers (this one first), remove this one, unless it
    /// is the last (then it is only stopped: there is no cluster left to leave).
    fn plan_leave(&self) -> Result<Change> {
        let c = etcd::client()?;
        let urls: Vec<String> = std::iter::once(self.client_url.clone()).chain(self.others.iter().cloned()).collect();
        let (via, members) = etcd::first_answer(&c, &urls)?.ok_or_else(|| anyhow!("no etcd member to ask"))?;
        let me = members.iter().find(|m| m.name == self.name || m.peer_urls.contains(&self.peer_url));
        Ok(match me {
            Some(m) if members.len() > 1 => Change::new(
                format!("leave the etcd cluster of {} (member remove {}), stop etcd, set its data aside", members.len(), m.id),
                Op::Leave { via: Some(via), id: Some(m.id.clone()) },
            ),
            _ => Change::new("stop etcd and set its data aside (the last member: no cluster left)", Op::Leave { via: None, id: None }),
        })
    }

    /// `NAME=PEER_URL,...` for a member joining `members` (this node named, other members that
    /// never started left out: etcd lists them without a name).
    fn initial_cluster(&self, members: &[Member]) -> String {
        let mut parts: Vec<String> = members
            .iter()
            .filter_map(|m| {
                let url = m.peer_urls.first()?;
                if *url == self.peer_url {
                    Some(format!("{}={url}", self.name))
                } else if !m.name.is_empty() {
                    Some(format!("{}={url}", m.name))
                } else {
                    None
                }
            })
            .collect();
        if !parts.iter().any(|p| p.ends_with(&format!("={}", self.peer_url))) {
            parts.push(format!("{}={}", self.name, self.peer_url));
        }
        parts.join(",")
    }
}

impl State for EtcdMember {
    fn claims(&self) -> Vec<Claim> {
        vec![Claim::path(&self.file), Claim::path(&self.data_dir)]
    }

    fn target(&self) -> String {
        format!("{} ({})", self.name, self.peer_url)
    }

    /// The unit this state starts: its queued restarts (a new etcd-config) are then done.
    fn service_unit(&self) -> Option<&str> {
        Some(&self.unit)
    }

    fn starts_unit(&self, plan: &Plan) -> bool {
        plan.ops::<Op>().any(|op| matches!(op, Op::New | Op::Join { .. }))
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        let mut plan = Plan::default();
        if self.leave {
            if self.has_member_data(cx) {
                plan.push(self.plan_leave()?);
            }
            return Ok(plan);
        }
        if self.has_member_data(cx) {
            if !cx.path(&self.file).is_file() {
                plan.push(Change::new(format!("write {} (member data exists)", self.file.display()), Op::File));
            }
            return Ok(plan);
        }
        let c = etcd::client()?;
        let found = etcd::first_answer(&c, &self.others).map_err(|e| {
            anyhow!(
                "{e:#}. Other members are registered in DNS, so this node will not form a cluster of its own: \
                 start one of them, or delete their _etcd-client._tcp records if they are gone for good"
            )
        })?;
        let aside = self.aside_note(cx);
        let Some((via, members)) = found else {
            self.none_registered()?;
            plan.push(Change::new(format!("form a new etcd cluster (no other member is registered in DNS){aside}"), Op::New));
            return Ok(plan);
        };
        let mine = members.iter().find(|m| m.peer_urls.contains(&self.peer_url) || m.name == self.name);
        let n = members.len();
        let change = match mine {
            Some(m) if m.name.is_empty() && m.peer_urls.contains(&self.peer_url) => Change::new(
                format!("join the etcd cluster through {via} (already added as member {}){aside}", m.id),
                Op::Join { via, replace: None, added: true },
            ),
            Some(m) => Change::new(
                format!("replace member {} ({}): this node's etcd data is gone; remove it, add this node, join{aside}", m.name, m.id),
                Op::Join { via, replace: Some(m.id.clone()), added: false },
            ),
            None => Change::new(
                format!("join the etcd cluster of {n} through {via} (member add, then start){aside}"),
                Op::Join { via, replace: None, added: false },
            ),
        };
        plan.push(change);
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        cx.require_live("etcd membership")?;
        for op in plan.ops::<Op>() {
            match op {
                Op::Leave { via, id } => {
                    if let (Some(via), Some(id)) = (via, id) {
                        etcd::member_remove(&etcd::client()?, via, id)?;
                    }
                    cx.runner.check(&Cmd::new("systemctl").args(["disable", "--now", self.unit.as_str()]))?;
                    systemd::invalidate(cx);
                    self.set_aside_data(cx)?;
                    let (dir, name) = beneath::open_parent(cx, &self.file, None, None)?;
                    match std::fs::remove_file(dir.join(&name)) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                        _ => {}
                    }
                }
                Op::File => self.write(cx, "existing", &format!("{}={}", self.name, self.peer_url))?,
                Op::New => {
                    self.set_aside_data(cx)?;
                    self.write(cx, "new", &format!("{}={}", self.name, self.peer_url))?;
                    self.start(cx)?;
                }
                Op::Join { via, replace, added } => {
                    let c = etcd::client()?;
                    if let Some(id) = replace {
                        etcd::member_remove(&c, via, id)?;
                    }
                    let members =
                        if *added { etcd::member_list(&c, via)? } else { etcd::member_add(&c, via, &self.peer_url)? };
                    self.set_aside_data(cx)?;
                    self.write(cx, "existing", &self.initial_cluster(&members))?;
                    self.start(cx)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{chown, symlink};

    fn member(data_dir: &str) -> EtcdMember {
        EtcdMember {
            name: "db1".into(),
            peer_url: "http://198.18.0.10:2380".into(),
            client_url: "http://198.18.0.10:2379".into(),
            others: Vec::new(),
            data_dir: data_dir.into(),
            file: "/etc/default/etcd.d/cluster".into(),
            unit: "etcd".into(),
            leave: false,
            registry_server: "198.18.0.1:53".parse().unwrap(),
            registry_name: "_etcd-server._tcp.lab.test.".parse().unwrap(),
        }
    }

    #[test]
    fn leftover_data_in_etcds_own_directory_is_set_aside_and_never_through_a_link() {
        let t = tempfile::tempdir().unwrap();
        let etc = t.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("passwd"), "root:x:0:0::/root:/bin/sh\netcd:x:102:102::/var/lib/etcd:/usr/sbin/nologin\n")
            .unwrap();
        std::fs::write(etc.join("group"), "root:x:0:\netcd:x:102:\n").unwrap();
        // Debian's layout: /var/lib/etcd and its data directory are etcd's.
        let lib = t.path().join("var/lib/etcd");
        std::fs::create_dir_all(lib.join("default/member-leftover")).unwrap();
        chown(&lib, Some(102), Some(102)).unwrap();
        chown(lib.join("default"), Some(102), Some(102)).unwrap();
        let cx = Context::for_tests(t.path());
        member("/var/lib/etcd/default").set_aside_data(&cx).unwrap();
        assert!(!lib.join("default").exists(), "the leftover data was not moved");
        let aside: Vec<_> = std::fs::read_dir(&lib).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(aside.len(), 1);
        assert!(aside[0].to_string_lossy().starts_with("default.set-aside-"), "{aside:?}");
        // A directory on the way that another user linked elsewhere: nothing moves through it.
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir_all(elsewhere.join("default/x")).unwrap();
        std::fs::create_dir_all(t.path().join("srv")).unwrap();
        symlink(&elsewhere, t.path().join("srv/etcd")).unwrap();
        std::os::unix::fs::lchown(t.path().join("srv/etcd"), Some(1000), None).unwrap();
        assert!(member("/srv/etcd/default").set_aside_data(&cx).is_err());
        assert!(elsewhere.join("default/x").exists());
    }
}
