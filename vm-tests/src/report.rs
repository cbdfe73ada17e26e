//! Applying and checking with the installed binary, and reading its `--json` report as a `RunReport`.
//!
//! The report is the engine's own type, so a renamed field breaks the build, not a scenario an hour in.

use crate::operator::{run_test_role, INSTALLED};
use crate::{Node, RunResult};

pub use states::engine::report::{ChangeKind, NotificationReport, RunReport, StateReport, Status};

/// `bootstrap apply --json` of the installed binary, on the node's recorded roles.
pub const APPLY: &[&str] = &[INSTALLED, "apply", "--json"];
/// `bootstrap --check --json` of the installed binary, on the node's recorded roles.
pub const CHECK: &[&str] = &[INSTALLED, "--check", "--json"];

/// The report a `--json` run printed; panics with the whole output if it is not one.
#[track_caller]
pub fn parse(r: &RunResult) -> RunReport {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not a JSON report ({e}):\n{}\n{}", r.stdout, r.stderr))
}

/// The report of an `apply --json` that must have succeeded.
#[track_caller]
pub fn applied(r: &RunResult) -> RunReport {
    assert_eq!(r.code, 0, "apply failed:\n{}\n{}", r.stdout, r.stderr);
    parse(r)
}

/// Exit code and report of a `--check --json`, which must have run to the end: 0 (nothing to
/// do) or 2 (something pending), never 1.
#[track_caller]
pub fn checked(r: &RunResult) -> (i32, RunReport) {
    assert!(r.code == 0 || r.code == 2, "--check failed:\n{}\n{}", r.stdout, r.stderr);
    (r.code, parse(r))
}

/// [`APPLY`] on `node`: must succeed; returns the report.
#[track_caller]
pub fn apply(node: &Node) -> RunReport {
    let r = node.run(APPLY);
    assert_eq!(r.code, 0, "apply on {} failed:\n{}\n{}", node.name(), r.stdout, r.stderr);
    parse(&r)
}

/// [`CHECK`] on `node`: (exit code, report).
#[track_caller]
pub fn check(node: &Node) -> (i32, RunReport) {
    checked(&node.run(CHECK))
}

/// The ids [`CHECK`] lists as pending; its exit code must agree (2, or 0 when none).
#[track_caller]
pub fn pending(node: &Node) -> Vec<String> {
    let (code, report) = check(node);
    let ids = report.ids_with(Status::Pending);
    assert_eq!(code, if ids.is_empty() { 0 } else { 2 }, "--check exit code with pending states {ids:?}: {report:?}");
    ids
}

/// `apply --json` of the scenario's test role: must succeed; returns the report.
#[track_caller]
pub fn apply_test_role(node: &Node) -> RunReport {
    applied(&run_test_role(node, &["apply", "--json"]))
}

/// `--check --json` of the scenario's test role: (exit code, report).
#[track_caller]
pub fn check_test_role(node: &Node) -> (i32, RunReport) {
    checked(&run_test_role(node, &["--check", "--json"]))
}

/// `--check` of the scenario's test role must exit 0: nothing left to change.
#[track_caller]
pub fn assert_test_role_converged(node: &Node) {
    let r = run_test_role(node, &["--check"]);
    assert_eq!(r.code, 0, "--check after converging:\n{}\n{}", r.stdout, r.stderr);
}

/// The state `id`; panics naming the states the report has.
#[track_caller]
pub fn state<'a>(report: &'a RunReport, id: &str) -> &'a StateReport {
    report.states.iter().find(|s| s.id == id).unwrap_or_else(|| {
        let ids: Vec<&str> = report.states.iter().map(|s| s.id.as_str()).collect();
        panic!("no state {id} in the report, only {ids:?}")
    })
}

/// What state `id` changed or would change, one summary per change.
#[track_caller]
pub fn summaries(report: &RunReport, id: &str) -> Vec<String> {
    state(report, id).changes.iter().map(|c| c.summary.clone()).collect()
}
