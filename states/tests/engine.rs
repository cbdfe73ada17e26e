//! The engine: ordering, failure isolation, idempotence checking, notifications.

mod support;

use std::fs;

use states::engine::contract::{Change, Claim, Plan, State};
use states::engine::notify::{Notification, PendingQueue};
use states::engine::report::{Mode, Status};
use states::engine::run::Node;
use states::Context;
use support::*;

/// A state whose apply does nothing: its second plan is never empty.
struct Broken;

impl State for Broken {
    fn claims(&self) -> Vec<Claim> {
        Vec::new()
    }
    fn target(&self) -> String {
        "nothing".into()
    }
    fn plan(&self, _: &Context) -> anyhow::Result<Plan> {
        let mut p = Plan::default();
        p.push(Change::new("always differs", ()));
        Ok(p)
    }
    fn apply(&self, _: &Context, _: &Plan) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A state that checks, while applying, that its notification is already on disk.
struct SeesQueue(std::path::PathBuf);

impl State for SeesQueue {
    fn claims(&self) -> Vec<Claim> {
        Vec::new()
    }
    fn target(&self) -> String {
        self.0.display().to_string()
    }
    fn plan(&self, _: &Context) -> anyhow::Result<Plan> {
        let mut p = Plan::default();
        if !self.0.exists() {
            p.push(Change::new("create marker", ()));
        }
        Ok(p)
    }
    fn apply(&self, cx: &Context, _: &Plan) -> anyhow::Result<()> {
        let q = fs::read_to_string(PendingQueue::path(cx))?;
        anyhow::ensure!(q.contains("haproxy"), "notification not persisted before apply: {q}");
        fs::write(&self.0, "")?;
        Ok(())
    }
}

#[test]
fn a_state_that_is_not_idempotent_fails_the_run() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let nodes =
        vec![Node { id: "broken".into(), kind: "test", state: Box::new(Broken), requires: vec![], notify: vec![] }];
    let r = apply(&cx, &nodes);
    assert_eq!(r.states[0].status, Status::Failed);
    assert!(r.states[0]
        .error
        .as_deref()
        .unwrap()
        .contains("not idempotent: after apply it still plans: always differs"));
    assert_eq!(r.exit_code(), 1);
}

#[test]
fn failure_skips_dependents_and_independent_states_still_run() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    fs::write(root.path().join("blocker"), "a file where a directory should be").unwrap();
    let role = r#"
[[state]]
id = "child"
type = "file"
path = "/blocker/child/f"
content = "x"
requires = ["parent"]

[[state]]
id = "parent"
type = "directory"
path = "/blocker/child"

[[state]]
id = "grandchild"
type = "file"
path = "/elsewhere/g"
content = "x"
requires = ["child"]

[[state]]
id = "independent"
type = "file"
path = "/independent"
content = "y"
"#;
    let nodes = nodes(&cx, role, &[]).unwrap();
    let r = apply(&cx, &nodes);
    let order: Vec<&str> = r.states.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(order, ["parent", "child", "grandchild", "independent"]);
    assert_eq!(status_of(&r, "parent"), Status::Failed);
    assert_eq!(status_of(&r, "child"), Status::Skipped);
    assert_eq!(status_of(&r, "grandchild"), Status::Skipped);
    assert_eq!(status_of(&r, "independent"), Status::Changed);
    assert!(r.states[1].error.as_deref().unwrap().contains("requires `parent`"));
    assert!(root.path().join("independent").exists());
    assert!(!root.path().join("elsewhere").exists());
}

fn notifying_role() -> &'static str {
    r#"
[[state]]
id = "cfg"
type = "file"
path = "/etc/haproxy/haproxy.cfg"
content = "v1\n"
notify = ["reload haproxy"]

[[state]]
id = "cfg2"
type = "file"
path = "/etc/haproxy/extra.cfg"
content = "v1\n"
notify = ["reload haproxy", "restart pg"]

[[state]]
id = "other"
type = "file"
path = "/etc/pg.conf"
content = "v1\n"
notify = ["reload pg"]
"#
}

#[test]
fn notifications_merge_and_run_once() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let nodes = nodes(&cx, notifying_role(), &[]).unwrap();
    let check = run(&cx, &nodes, Mode::Check, &Recorder::default());
    let would: Vec<&str> = check.notifications.iter().map(|n| n.notification.as_str()).collect();
    assert_eq!(would, ["reload haproxy", "restart pg"]);
    assert_eq!(check.exit_code(), 2);

    let rec = Recorder::default();
    let r = run(&cx, &nodes, Mode::Apply, &rec);
    assert_eq!(*rec.seen.borrow(), ["reload haproxy", "restart pg"]);
    assert_eq!(r.exit_code(), 0);
    assert!(!PendingQueue::path(&cx).exists(), "queue cleared after success");

    // Converged: nothing to notify.
    let rec = Recorder::default();
    run(&cx, &nodes, Mode::Apply, &rec);
    assert!(rec.seen.borrow().is_empty());

    // One drifted file: only its own notification.
    fs::write(root.path().join("etc/pg.conf"), "edited").unwrap();
    let rec = Recorder::default();
    run(&cx, &nodes, Mode::Apply, &rec);
    assert_eq!(*rec.seen.borrow(), ["reload pg"]);
}

#[test]
fn a_failed_notification_stays_pending_and_replays() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let nodes = nodes(&cx, notifying_role(), &[]).unwrap();
    let failing = Recorder::default();
    failing.fail.set(true);
    let r = run(&cx, &nodes, Mode::Apply, &failing);
    assert_eq!(r.exit_code(), 1, "a failed reload fails the run");
    assert_eq!(r.changed, 3);

    // Nothing left to change, but the queue makes --check report pending work.
    let c = run(&cx, &nodes, Mode::Check, &Recorder::default());
    assert_eq!(c.pending, 0);
    assert_eq!(c.exit_code(), 2);

    let rec = Recorder::default();
    let r = run(&cx, &nodes, Mode::Apply, &rec);
    assert_eq!(r.changed, 0);
    assert_eq!(*rec.seen.borrow(), ["reload haproxy", "restart pg"]);
    assert_eq!(run(&cx, &nodes, Mode::Check, &Recorder::default()).exit_code(), 0);
}

#[test]
fn the_queue_is_on_disk_before_the_change() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let marker = root.path().join("marker");
    let nodes = vec![Node {
        id: "sees-queue".into(),
        kind: "test",
        state: Box::new(SeesQueue(marker.clone())),
        requires: vec![],
        notify: vec![Notification::parse("reload haproxy").unwrap()],
    }];
    let rec = Recorder::default();
    let r = run(&cx, &nodes, Mode::Apply, &rec);
    assert_eq!(r.states[0].status, Status::Changed, "{:?}", r.states[0].error);
    assert_eq!(*rec.seen.borrow(), ["reload haproxy"]);
}

#[test]
fn a_corrupt_queue_is_set_aside_and_everything_it_could_hold_is_carried_out() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let nodes = nodes(&cx, notifying_role(), &[]).unwrap();
    apply(&cx, &nodes);
    let queue = PendingQueue::path(&cx);
    fs::create_dir_all(queue.parent().unwrap()).unwrap();
    fs::write(&queue, "[{\"action\": \"rel").unwrap();

    // A dry run shows every notification the roles can send as owed, and moves nothing.
    let c = run(&cx, &nodes, Mode::Check, &Recorder::default());
    let owed: Vec<&str> = c.notifications.iter().map(|n| n.notification.as_str()).collect();
    assert_eq!(owed, ["reload haproxy", "restart pg"]);
    assert_eq!((c.pending, c.exit_code()), (0, 2));
    assert!(queue.exists() && !PendingQueue::set_aside_path(&cx).exists());

    // The run goes on: the file set aside for a look, each notification carried out once.
    let rec = Recorder::default();
    let r = run(&cx, &nodes, Mode::Apply, &rec);
    assert_eq!(r.exit_code(), 0, "{:?}", r.notifications);
    assert_eq!(*rec.seen.borrow(), ["reload haproxy", "restart pg"]);
    assert_eq!(fs::read_to_string(PendingQueue::set_aside_path(&cx)).unwrap(), "[{\"action\": \"rel");
    assert!(!queue.exists());

    // A run that fails to carry them out leaves them owed, in a queue that reads again.
    fs::write(&queue, "\u{0}garbage").unwrap();
    let failing = Recorder::default();
    failing.fail.set(true);
    assert_eq!(run(&cx, &nodes, Mode::Apply, &failing).exit_code(), 1);
    let owed = PendingQueue::load(&cx, true).unwrap();
    assert!(!owed.is_corrupt());
    assert_eq!(owed.items().iter().map(|n| n.to_string()).collect::<Vec<_>>(), ["reload haproxy", "restart pg"]);
    assert_eq!(run(&cx, &nodes, Mode::Apply, &Recorder::default()).exit_code(), 0);
    assert_eq!(run(&cx, &nodes, Mode::Check, &Recorder::default()).exit_code(), 0);

    // A queue that can't be read at all (a directory in its place): everything is owed, and
    // the directory is moved aside for the queue to be written.
    fs::create_dir(&queue).unwrap();
    fs::write(queue.join("what"), "?").unwrap();
    let c = run(&cx, &nodes, Mode::Check, &Recorder::default());
    assert_eq!((c.notifications.len(), c.exit_code()), (2, 2));
    let rec = Recorder::default();
    assert_eq!(run(&cx, &nodes, Mode::Apply, &rec).exit_code(), 0);
    assert_eq!(*rec.seen.borrow(), ["reload haproxy", "restart pg"]);
    assert!(!queue.exists() && PendingQueue::set_aside_path(&cx).join("what").exists());

    // A copy that can't be set aside (the directory is there) does not stop the run either.
    fs::write(&queue, "garbage").unwrap();
    let rec = Recorder::default();
    assert_eq!(run(&cx, &nodes, Mode::Apply, &rec).exit_code(), 0);
    assert_eq!(*rec.seen.borrow(), ["reload haproxy", "restart pg"]);
    assert!(!queue.exists());
}

#[test]
fn restart_wins_over_reload_in_the_queue() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let mut q = PendingQueue::load(&cx, false).unwrap();
    q.add(&[Notification::parse("reload web").unwrap()]).unwrap();
    q.add(&[Notification::parse("restart web").unwrap(), Notification::parse("reload web").unwrap()]).unwrap();
    let q = PendingQueue::load(&cx, false).unwrap();
    assert_eq!(q.items(), [Notification::parse("restart web").unwrap()]);
}

#[test]
fn a_dry_run_defers_a_plan_that_needs_a_pending_dependency() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    // `needs-dir` fails to plan while /blocker is a file; the state before it would fix that.
    fs::write(root.path().join("blocker"), "file").unwrap();
    let role = r#"
[[state]]
id = "clear"
type = "absent"
path = "/blocker"

[[state]]
id = "needs-dir"
type = "absent"
path = "/blocker/inner"
requires = ["clear"]

[[state]]
id = "independent-failure"
type = "absent"
path = "/blocker/other"
"#;
    let nodes = nodes(&cx, role, &[]).unwrap();
    let r = check(&cx, &nodes);
    assert_eq!(status_of(&r, "clear"), Status::Pending);
    assert_eq!(status_of(&r, "needs-dir"), Status::Pending, "{:?}", r.states[1]);
    assert!(r.states[1].changes[0].summary.contains("planned once `clear` is applied"));
    // Without a pending dependency, the same error is a failure.
    assert_eq!(status_of(&r, "independent-failure"), Status::Failed);
    assert_eq!(r.exit_code(), 1);
}

type Log = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A stand-in for a `service` state (it manages unit `web`) or for a state after it; both log
/// when they are planned.
struct Logged {
    id: &'static str,
    unit: Option<&'static str>,
    log: Log,
}

impl State for Logged {
    fn claims(&self) -> Vec<Claim> {
        Vec::new()
    }
    fn target(&self) -> String {
        self.id.into()
    }
    fn service_unit(&self) -> Option<&str> {
        self.unit
    }
    fn plan(&self, _: &Context) -> anyhow::Result<Plan> {
        self.log.lock().unwrap().push(format!("plan {}", self.id));
        Ok(Plan::default())
    }
    fn apply(&self, _: &Context, _: &Plan) -> anyhow::Result<()> {
        Ok(())
    }
}

struct LogNotifier(Log);

impl states::engine::notify::Notifier for LogNotifier {
    fn notify(&self, _: &Context, n: &Notification) -> anyhow::Result<()> {
        self.0.lock().unwrap().push(n.to_string());
        Ok(())
    }
}

#[test]
fn a_service_state_carries_out_its_reload_before_its_dependents() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let mut built = nodes(
        &cx,
        "[[state]]\nid = \"conf\"\ntype = \"file\"\npath = \"/etc/web.conf\"\ncontent = \"v1\"\nnotify = [\"reload web\", \"restart other\"]\n",
        &[],
    )
    .unwrap();
    let log: Log = Default::default();
    built.push(Node {
        id: "web-service".into(),
        kind: "test",
        state: Box::new(Logged { id: "web-service", unit: Some("web.service"), log: log.clone() }),
        requires: vec!["conf".into()],
        notify: vec![],
    });
    built.push(Node {
        id: "after".into(),
        kind: "test",
        state: Box::new(Logged { id: "after", unit: None, log: log.clone() }),
        requires: vec!["web-service".into()],
        notify: vec![],
    });
    let r = run(&cx, &built, Mode::Apply, &LogNotifier(log.clone()));
    assert_eq!(r.exit_code(), 0, "{:?}", r.states);
    // Both planned ahead (in any order), then again after `conf` changed the system: `reload
    // web` right after the web service's state, before what requires it; `restart other` (no
    // state manages it) at the end.
    let log = log.lock().unwrap();
    let mut ahead = log[..2].to_vec();
    ahead.sort();
    assert_eq!(ahead, ["plan after", "plan web-service"]);
    assert_eq!(log[2..], ["plan web-service", "reload web", "plan after", "restart other"]);
    assert!(!PendingQueue::path(&cx).exists());
}

/// A state whose plan waits (up to 10 s) until `n` plans of its kind have begun: it plans
/// nothing when they overlap and fails when it is planned alone.
struct Rendezvous {
    n: usize,
    met: std::sync::Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>,
    log: Log,
}

impl State for Rendezvous {
    fn claims(&self) -> Vec<Claim> {
        Vec::new()
    }
    fn target(&self) -> String {
        "rendezvous".into()
    }
    fn plan(&self, _: &Context) -> anyhow::Result<Plan> {
        self.log.lock().unwrap().push("plan".into());
        let (count, cv) = &*self.met;
        let mut c = count.lock().unwrap();
        *c += 1;
        cv.notify_all();
        let (c, _) = cv.wait_timeout_while(c, std::time::Duration::from_secs(10), |c| *c < self.n).unwrap();
        anyhow::ensure!(*c >= self.n, "planned alone: {} of {} plans began", *c, self.n);
        Ok(Plan::default())
    }
    fn apply(&self, _: &Context, _: &Plan) -> anyhow::Result<()> {
        Ok(())
    }
}

#[test]
fn plans_are_made_concurrently_and_once_in_a_run_that_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let log: Log = Default::default();
    let met = Default::default();
    let built: Vec<Node> = (0..3)
        .map(|i| Node {
            id: format!("r{i}"),
            kind: "test",
            state: Box::new(Rendezvous { n: 3, met: std::sync::Arc::clone(&met), log: log.clone() }),
            // A chain: ordered, yet observed together.
            requires: if i == 0 { vec![] } else { vec![format!("r{}", i - 1)] },
            notify: vec![],
        })
        .collect();
    let r = run(&cx, &built, Mode::Apply, &LogNotifier(log.clone()));
    assert_eq!(r.exit_code(), 0, "{:?}", r.states);
    assert_eq!(r.unchanged, 3);
    assert_eq!(log.lock().unwrap().len(), 3, "each state planned once");
}

/// Plans a change while `path` is missing; applying it is an error (the file state before it
/// creates the file).
struct ExpectsFile(std::path::PathBuf);

impl State for ExpectsFile {
    fn claims(&self) -> Vec<Claim> {
        Vec::new()
    }
    fn target(&self) -> String {
        self.0.display().to_string()
    }
    fn plan(&self, _: &Context) -> anyhow::Result<Plan> {
        let mut p = Plan::default();
        if !self.0.exists() {
            p.push(Change::new("missing", ()));
        }
        Ok(p)
    }
    fn apply(&self, _: &Context, _: &Plan) -> anyhow::Result<()> {
        anyhow::bail!("applied a plan made before the file existed")
    }
}

#[test]
fn a_state_after_a_change_is_planned_again() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let mut built =
        nodes(&cx, "[[state]]\nid = \"conf\"\ntype = \"file\"\npath = \"/etc/web.conf\"\ncontent = \"v1\"\n", &[])
            .unwrap();
    built.push(Node {
        id: "reader".into(),
        kind: "test",
        state: Box::new(ExpectsFile(root.path().join("etc/web.conf"))),
        requires: vec!["conf".into()],
        notify: vec![],
    });
    let r = run(&cx, &built, Mode::Apply, &LogNotifier(Default::default()));
    assert_eq!(r.exit_code(), 0, "{:?}", r.states);
    assert_eq!((status_of(&r, "conf"), status_of(&r, "reader")), (Status::Changed, Status::Unchanged));
    // A dry run plans everything ahead and keeps those plans: the file exists now.
    let r = run(&cx, &built, Mode::Check, &LogNotifier(Default::default()));
    assert_eq!(r.exit_code(), 0, "{:?}", r.states);
}
