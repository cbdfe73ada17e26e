//! The engine: plan every state in `requires` order, apply what differs, plan again to prove
//! idempotence, then run queued notifications. A dry run is the same code stopped before apply.
//!
//! Plans only observe, so all of them are first made concurrently (`plan_ahead`): their child
//! processes and round trips overlap, and a run that changes nothing costs its slowest
//! observation rather than their sum. Once a state has changed the system (or a notification
//! ran), every later state is planned again, after it, as if there had been no plan ahead; a
//! change itself is always carried out on a plan made right before it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::engine::context::Context;
use crate::engine::contract::{Plan, State};
use crate::engine::graph;
use crate::engine::notify::{merge, Notification, Notifier, PendingQueue};
use crate::engine::report::{ChangeReport, Mode, NotificationReport, RunReport, StateReport, Status};

/// A state as a role placed it: with its ordering and notifications.
pub struct Node {
    /// The id the role gave it; unique within a run.
    pub id: String,
    /// Its `type` in the role (`file`, `service`…).
    pub kind: &'static str,
    pub state: Box<dyn State>,
    pub requires: Vec<String>,
    pub notify: Vec<Notification>,
}

/// What the engine tells its observer (progress display, logs) while it runs.
pub enum Event<'a> {
    Started { id: &'a str, kind: &'a str, target: String },
    Finished(&'a StateReport),
}

/// The order in which `nodes` run; an unknown `requires` id or a cycle is an error.
pub fn order(nodes: &[Node]) -> Result<Vec<usize>> {
    let pairs: Vec<(&str, &[String])> = nodes.iter().map(|n| (n.id.as_str(), n.requires.as_slice())).collect();
    graph::order(&pairs)
}

/// Run `nodes`. `observe` hears when each state starts and its result as soon as it is known.
/// Ends a run's observations when the run ends, however it ends.
struct RunEnds<'a>(&'a Context);

impl Drop for RunEnds<'_> {
    fn drop(&mut self) {
        self.0.shared.changed();
    }
}

pub fn run(
    cx: &Context,
    nodes: &[Node],
    mode: Mode,
    notifier: &dyn Notifier,
    observe: &mut dyn FnMut(Event),
) -> Result<RunReport> {
    let t0 = Instant::now();
    let started = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let order = order(nodes)?;
    cx.shared.set_check(mode == Mode::Check);
    // What this run observed is not the next one's (a context may serve several runs: tests).
    let _ends = RunEnds(cx);
    let mut ahead = plan_ahead(cx, nodes, &order);
    // Plans made ahead hold only while the run has changed nothing (`Shared` counts each apply
    // and notification).
    let unchanged_since = cx.shared.changes();
    let mut queue = PendingQueue::load(cx, mode == Mode::Check)?;
    // In a dry run, what the queue would hold once the planned changes were made.
    let mut would_queue: Vec<Notification> = queue.items().to_vec();
    if queue.is_corrupt() {
        // What it held is unknown: whatever it could have held is owed.
        let every: Vec<Notification> = nodes.iter().flat_map(|n| n.notify.iter().cloned()).collect();
        for n in &every {
            merge(&mut would_queue, n);
        }
        if mode == Mode::Apply {
            queue.owe_all(&every)?;
        }
        let kept = queue.aside().map_or(String::new(), |p| format!(" (a copy is kept as {})", p.display()));
        tracing::warn!(
            "{} could not be read{kept}: every reload and restart the roles can send is carried out",
            PendingQueue::path(cx).display(),
        );
    }
    let mut not_ok: HashSet<&str> = HashSet::new();
    // Dry run: states that would change. A dependent can't always be planned before they are
    // applied (a service whose package is not installed yet).
    let mut pending: HashSet<&str> = HashSet::new();
    let mut states = Vec::with_capacity(nodes.len());
    // Notifications carried out right after the state of their service.
    let mut early = Vec::new();

    for i in order {
        let node = &nodes[i];
        let st = &*node.state;
        let t = Instant::now();
        let made_ahead = ahead[i].take().filter(|_| cx.shared.changes() == unchanged_since);
        let ahead_ms = made_ahead.as_ref().map_or(0.0, |(_, ms)| *ms);
        let mut report = StateReport {
            id: node.id.clone(),
            kind: node.kind.to_string(),
            target: st.target(),
            status: Status::Unchanged,
            changes: Vec::new(),
            error: None,
            duration_ms: 0.0,
            fingerprint: String::new(),
            change: None,
        };
        observe(Event::Started { id: &node.id, kind: node.kind, target: report.target.clone() });
        if let Some(r) = node.requires.iter().find(|r| not_ok.contains(r.as_str())) {
            report.status = Status::Skipped;
            report.error = Some(format!("requires `{r}`, which did not succeed"));
        } else {
            match run_one(cx, node, mode, made_ahead.map(|(plan, _)| plan), &mut queue, &mut would_queue) {
                Ok((status, plan)) => {
                    report.status = status;
                    report.changes = describe(cx, &plan);
                    if status == Status::Changed && st.starts_unit(&plan) {
                        if let Some(unit) = st.service_unit() {
                            early.extend(satisfied_by_start(cx, &mut queue, unit));
                        }
                    }
                }
                Err((e, _)) if mode == Mode::Check && node.requires.iter().any(|r| pending.contains(r.as_str())) => {
                    let after: Vec<&str> =
                        node.requires.iter().map(String::as_str).filter(|r| pending.contains(r)).collect();
                    report.status = Status::Pending;
                    report.changes = vec![ChangeReport {
                        summary: cx
                            .secrets
                            .scrub(&format!("planned once `{}` is applied (now: {e:#})", after.join("`, `"))),
                        diff: None,
                    }];
                }
                Err((e, plan)) => {
                    report.status = Status::Failed;
                    report.changes = plan.as_ref().map(|p| describe(cx, p)).unwrap_or_default();
                    report.error = Some(cx.secrets.scrub(&format!("{e:#}")));
                }
            }
        }
        if report.status == Status::Pending {
            pending.insert(&node.id);
        }
        if mode == Mode::Apply && matches!(report.status, Status::Changed | Status::Unchanged) {
            if let Some(unit) = st.service_unit() {
                early.extend(run_notifications(cx, &mut queue, notifier, Some(unit)));
            }
        }
        if matches!(report.status, Status::Failed | Status::Skipped) {
            not_ok.insert(&node.id);
        }
        report.duration_ms = ahead_ms + ms(t);
        observe(Event::Finished(&report));
        states.push(report);
    }

    let notifications = match mode {
        Mode::Check => would_queue
            .iter()
            .map(|n| NotificationReport { notification: n.to_string(), status: Status::Pending, error: None })
            .collect(),
        Mode::Apply => {
            early.extend(run_notifications(cx, &mut queue, notifier, None));
            early
        }
    };

    let count = |s: Status| states.iter().filter(|r| r.status == s).count();
    Ok(RunReport {
        mode,
        started,
        duration_ms: ms(t0),
        unchanged: count(Status::Unchanged),
        changed: count(Status::Changed),
        pending: count(Status::Pending),
        failed: count(Status::Failed),
        skipped: count(Status::Skipped),
        states,
        notifications,
        site: None,
    })
}

/// At most this many plans at once: enough to overlap every child process of a role's
/// observations, few enough that a run never looks like a fork bomb.
const PLANNERS: usize = 8;

/// Every node's plan (and how long it took, in ms), made concurrently before anything
/// changes, indexed like `nodes`. Taken in `order`, so the first states' plans are first ready.
fn plan_ahead(cx: &Context, nodes: &[Node], order: &[usize]) -> Vec<Option<(Result<Plan>, f64)>> {
    let made: Vec<OnceLock<(Result<Plan>, f64)>> = nodes.iter().map(|_| OnceLock::new()).collect();
    let next = AtomicUsize::new(0);
    let planner = || {
        while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            let t = Instant::now();
            let plan = nodes[i].state.plan(cx);
            let _ = made[i].set((plan, ms(t)));
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..PLANNERS.min(order.len()) {
            scope.spawn(planner);
        }
        planner();
    });
    made.into_iter().map(OnceLock::into_inner).collect()
}

type Failure = (anyhow::Error, Option<Plan>);

/// One state: `ahead` is its plan when it was made before anything in this run changed.
fn run_one(
    cx: &Context,
    node: &Node,
    mode: Mode,
    ahead: Option<Result<Plan>>,
    queue: &mut PendingQueue,
    would_queue: &mut Vec<Notification>,
) -> Result<(Status, Plan), Failure> {
    let st = &*node.state;
    let plan = match ahead {
        // A change is carried out on a plan made right before it: one made ahead may be
        // seconds old by now (a leader's switchover, an etcd membership).
        Some(Ok(p)) if mode == Mode::Apply && !p.is_empty() => st.plan(cx),
        Some(made) => made,
        None => st.plan(cx),
    }
    .map_err(|e| (e, None))?;
    if plan.is_empty() {
        return Ok((Status::Unchanged, plan));
    }
    if mode == Mode::Check {
        for n in &node.notify {
            merge(would_queue, n);
        }
        return Ok((Status::Pending, plan));
    }
    // Persisted before the change: a run killed during or after apply still reloads next time.
    if let Err(e) = queue.add(&node.notify) {
        return Err((e.context("cannot record pending notifications"), Some(plan)));
    }
    cx.shared.changed();
    if let Err(e) = st.apply(cx, &plan) {
        return Err((e, Some(plan)));
    }
    match st.plan(cx) {
        Ok(again) if again.is_empty() => Ok((Status::Changed, plan)),
        Ok(again) => {
            let left: Vec<String> = again.changes.iter().map(|c| c.summary.clone()).collect();
            Err((
                anyhow::anyhow!(
                    "not idempotent: after apply it still plans: {} (a bug in the state module)",
                    left.join("; ")
                ),
                Some(plan),
            ))
        }
        Err(e) => Err((e.context("planning again after apply failed"), Some(plan))),
    }
}

/// Carry out the queued notifications (only those of `unit`, when given), clearing each after
/// it succeeded.
fn run_notifications(
    cx: &Context,
    queue: &mut PendingQueue,
    notifier: &dyn Notifier,
    unit: Option<&str>,
) -> Vec<NotificationReport> {
    let mut out = Vec::new();
    for n in queue.items().to_vec() {
        if unit.is_some_and(|u| !same_unit(&n.service, u)) {
            continue;
        }
        cx.shared.changed();
        let result = notifier.notify(cx, &n).and_then(|()| queue.done(&n));
        out.push(match result {
            Ok(()) => NotificationReport { notification: n.to_string(), status: Status::Changed, error: None },
            Err(e) => NotificationReport {
                notification: n.to_string(),
                status: Status::Failed,
                error: Some(cx.secrets.scrub(&format!("{e:#}"))),
            },
        });
    }
    out
}

/// The queued reloads of `unit`, which this run just started: done without being sent (it read
/// its configuration at the start). Restarts stay queued: a unit file may need a daemon-reload
/// first, and an umbrella unit's start restarts nothing.
fn satisfied_by_start(cx: &Context, queue: &mut PendingQueue, unit: &str) -> Vec<NotificationReport> {
    let mut out = Vec::new();
    let reloads = |n: &Notification| same_unit(&n.service, unit) && n.action == crate::engine::notify::Action::Reload;
    for n in queue.items().to_vec().into_iter().filter(reloads) {
        out.push(match queue.done(&n) {
            Ok(()) => NotificationReport {
                notification: format!("{n} (not needed: the unit was just started)"),
                status: Status::Changed,
                error: None,
            },
            Err(e) => NotificationReport {
                notification: n.to_string(),
                status: Status::Failed,
                error: Some(cx.secrets.scrub(&format!("{e:#}"))),
            },
        });
    }
    out
}

fn same_unit(service: &str, unit: &str) -> bool {
    service.trim_end_matches(".service") == unit.trim_end_matches(".service")
}

/// Diffs of secret content are redacted by the modules; scrubbing here also catches a secret
/// value that reached a summary or a public file by mistake.
fn describe(cx: &Context, plan: &Plan) -> Vec<ChangeReport> {
    plan.changes
        .iter()
        .map(|c| ChangeReport {
            summary: cx.secrets.scrub(&c.summary),
            diff: c.diff.as_deref().map(|d| cx.secrets.scrub(d)),
        })
        .collect()
}

fn ms(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e6).round() / 1e3
}
