//! The `service` module against a fake systemd: a Runner that answers `systemctl show` from a
//! table of units, carries out enable/disable/start/stop on it, and records every command.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use states::engine::contract::{Change, Claim, Plan, State};
use states::engine::report::Status;
use states::engine::run::Node;
use states::engine::runner::{Cmd, Output, Runner};
use states::sys::systemd::{parse_show, UnitStatus};
use states::Context;
use support::*;

#[derive(Clone, Debug)]
struct Unit {
    file: &'static str,
    active: bool,
}

#[derive(Default)]
struct FakeSystemd {
    units: Mutex<BTreeMap<String, Unit>>,
    log: Mutex<Vec<String>>,
    /// Answer every command with this failure instead.
    fail: Mutex<Option<(i32, String)>>,
}

impl FakeSystemd {
    fn with(units: &[(&str, &'static str, bool)]) -> Arc<Self> {
        let f = FakeSystemd::default();
        for (name, file, active) in units {
            f.add(name, file, *active);
        }
        Arc::new(f)
    }
    fn add(&self, name: &str, file: &'static str, active: bool) {
        self.units.lock().unwrap().insert(name.to_string(), Unit { file, active });
    }
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
    fn unit(&self, name: &str) -> Unit {
        self.units.lock().unwrap()[name].clone()
    }
}

struct FakeRunner(Arc<FakeSystemd>);

impl Runner for FakeRunner {
    fn run(&self, cmd: &Cmd) -> anyhow::Result<Output> {
        let f = &self.0;
        f.log.lock().unwrap().push(cmd.display());
        assert_eq!(cmd.program, "systemctl");
        if let Some((code, msg)) = f.fail.lock().unwrap().clone() {
            return Ok(Output { code: Some(code), stdout: String::new(), stderr: msg });
        }
        let mut units = f.units.lock().unwrap();
        let args: Vec<&str> = cmd.args.iter().map(String::as_str).collect();
        let mut stdout = String::new();
        match args.as_slice() {
            ["show", props, names @ ..] => {
                assert_eq!(*props, "--property=Id,LoadState,ActiveState,SubState,UnitFileState");
                let records: Vec<String> = names
                    .iter()
                    .map(|n| match units.get(*n) {
                        Some(u) => format!(
                            "Id={n}\nLoadState=loaded\nActiveState={}\nSubState={}\nUnitFileState={}\n",
                            if u.active { "active" } else { "inactive" },
                            if u.active { "running" } else { "dead" },
                            u.file
                        ),
                        None => format!(
                            "Id={n}\nLoadState=not-found\nActiveState=inactive\nSubState=dead\nUnitFileState=\n"
                        ),
                    })
                    .collect();
                stdout = records.join("\n");
            }
            [verbs @ .., name] => {
                let u = units.get_mut(*name).expect("command on an unknown unit");
                for v in verbs {
                    match *v {
                        "enable" => u.file = "enabled",
                        "disable" => u.file = "disabled",
                        "start" => u.active = true,
                        "stop" => u.active = false,
                        "--now" => u.active = verbs[0] == "enable",
                        other => panic!("unexpected systemctl verb {other}"),
                    }
                }
            }
            _ => panic!("unexpected command {}", cmd.display()),
        }
        Ok(Output { code: Some(0), stdout, stderr: String::new() })
    }
}

/// A live context (root `/`, as services need) whose only way out is the fake.
fn live(fake: &Arc<FakeSystemd>) -> Context {
    let mut cx = cx(Path::new("/"));
    cx.runner = Box::new(FakeRunner(fake.clone()));
    cx
}

fn service(id: &str, name: &str, extra: &str) -> String {
    format!("[[state]]\nid = \"{id}\"\ntype = \"service\"\nname = \"{name}\"\n{extra}\n")
}

#[test]
fn parses_systemctl_show_as_systemd_prints_it() {
    // Captured from Debian bookworm's systemd 252 (the lab), including a missing unit.
    let text = "Id=cron.service\nLoadState=loaded\nActiveState=active\nSubState=running\nUnitFileState=enabled\n\n\
                Id=nosuch.service\nLoadState=not-found\nActiveState=inactive\nSubState=dead\nUnitFileState=\n\n\
                Id=dbus.service\nLoadState=loaded\nActiveState=active\nSubState=running\nUnitFileState=static\n";
    let units = parse_show(text);
    assert_eq!(units.len(), 3);
    assert_eq!(
        units[0],
        UnitStatus {
            id: "cron.service".into(),
            load_state: "loaded".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
            unit_file_state: "enabled".into(),
        }
    );
    assert_eq!((units[1].load_state.as_str(), units[1].unit_file_state.as_str()), ("not-found", ""));
    assert_eq!(units[2].unit_file_state, "static");
    // No trailing newline, extra blank lines, unknown properties: same records.
    let loose = "\nId=a.service\nX=y=z\nLoadState=loaded\n\n\nId=b.service\nLoadState=loaded";
    let units = parse_show(loose);
    assert_eq!(units.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), ["a.service", "b.service"]);
}

#[test]
fn a_converged_run_of_many_services_costs_one_child_process() {
    let n = 40;
    let names: Vec<String> = (0..n).map(|i| format!("svc{i}")).collect();
    let fake = FakeSystemd::with(&[]);
    for name in &names {
        fake.add(&format!("{name}.service"), "enabled", true);
    }
    let cx = live(&fake);
    let role: String = names.iter().map(|n| service(n, n, "enabled = true\nrunning = true")).collect();
    let nodes = nodes(&cx, &role, &[]).unwrap();

    let t = std::time::Instant::now();
    let r = check(&cx, &nodes);
    let took = t.elapsed();
    assert_eq!((r.unchanged, r.pending, r.failed), (n, 0, 0));
    let log = fake.log();
    assert_eq!(log.len(), 1, "one systemctl for all {n} units: {log:?}");
    assert!(log[0].starts_with("systemctl show '--property=") && log[0].ends_with(" svc39.service"), "{}", log[0]);
    eprintln!("no-op plan of {n} services: {took:?}");
}

#[test]
fn apply_issues_the_right_commands_then_converges() {
    let fake = FakeSystemd::with(&[
        ("new.service", "disabled", false),
        ("stopped.service", "enabled", false),
        ("unwanted.service", "enabled", true),
        ("manual.service", "disabled", true),
        ("boot-only.socket", "disabled", false),
    ]);
    let cx = live(&fake);
    let role = [
        service("new", "new", "enabled = true\nrunning = true"),
        service("stopped", "stopped", "running = true"),
        service("unwanted", "unwanted", "enabled = false\nrunning = false"),
        service("manual", "manual", "enabled = true\nrunning = false"),
        service("boot-only", "boot-only.socket", "enabled = true"),
    ]
    .concat();
    let nodes = nodes(&cx, &role, &[]).unwrap();

    let r = check(&cx, &nodes);
    assert_eq!(r.pending, 5);
    let summaries: Vec<Vec<&str>> =
        r.states.iter().map(|s| s.changes.iter().map(|c| c.summary.as_str()).collect()).collect();
    assert_eq!(summaries[0], ["enable (is disabled)", "start (is inactive/dead)"]);
    assert_eq!(summaries[2], ["disable (is enabled)", "stop (is active/running)"]);
    assert_eq!(fake.log().len(), 1, "a dry run asks once");

    // Each run is a new process with a new context.
    fake.log.lock().unwrap().clear();
    let cx = live(&fake);
    let nodes = support::nodes(&cx, &role, &[]).unwrap();
    let r = apply(&cx, &nodes);
    assert_eq!((r.changed, r.failed), (5, 0), "{:?}", r.states.iter().map(|s| &s.error).collect::<Vec<_>>());
    let changes: Vec<String> = fake.log().into_iter().filter(|c| !c.starts_with("systemctl show")).collect();
    assert_eq!(
        changes,
        [
            "systemctl enable --now new.service",
            "systemctl start stopped.service",
            "systemctl disable --now unwanted.service",
            "systemctl enable manual.service",
            "systemctl stop manual.service",
            "systemctl enable boot-only.socket",
        ]
    );
    // One show at the start, and one re-plan after each changed state (it observes afresh).
    let shows = fake.log().iter().filter(|c| c.starts_with("systemctl show")).count();
    assert_eq!(shows, 1 + 5);
    assert!(!fake.unit("boot-only.socket").active, "`enabled` alone does not start");

    fake.log.lock().unwrap().clear();
    let cx = live(&fake);
    let nodes = support::nodes(&cx, &role, &[]).unwrap();
    let r = apply(&cx, &nodes);
    assert_eq!((r.changed, r.unchanged), (0, 5));
    assert_eq!(fake.log().len(), 1);
}

/// Installs a unit into the fake, as a package install earlier in the run would.
struct InstallUnit(Arc<FakeSystemd>);

impl State for InstallUnit {
    fn claims(&self) -> Vec<Claim> {
        Vec::new()
    }
    fn target(&self) -> String {
        "haproxy".into()
    }
    fn plan(&self, _: &Context) -> anyhow::Result<Plan> {
        let mut p = Plan::default();
        if !self.0.units.lock().unwrap().contains_key("haproxy.service") {
            p.push(Change::new("install haproxy", ()));
        }
        Ok(p)
    }
    fn apply(&self, _: &Context, _: &Plan) -> anyhow::Result<()> {
        self.0.add("haproxy.service", "enabled", true);
        Ok(())
    }
}

#[test]
fn a_unit_that_appears_during_the_run_is_seen() {
    let fake = FakeSystemd::with(&[("cron.service", "enabled", true)]);
    let cx = live(&fake);
    let role = service("cron", "cron", "running = true") + &service("haproxy", "haproxy", "running = true");
    let mut nodes = nodes(&cx, &role, &[]).unwrap();
    // cron is planned first (the snapshot then knows no haproxy), then haproxy is installed.
    nodes.insert(
        1,
        Node {
            id: "install-haproxy".into(),
            kind: "test",
            state: Box::new(InstallUnit(fake.clone())),
            requires: vec![],
            notify: vec![],
        },
    );
    nodes[2].requires = vec!["install-haproxy".into()];
    nodes[1].requires = vec!["cron".into()];
    let r = apply(&cx, &nodes);
    assert_eq!(status_of(&r, "haproxy"), Status::Unchanged, "{:?}", r.states[2].error);
    assert_eq!(fake.log().len(), 2, "asked again only because haproxy was missing: {:?}", fake.log());
}

#[test]
fn clear_errors() {
    let fake = FakeSystemd::with(&[("dbus.service", "static", true)]);
    let cx = live(&fake);
    let role = service("haproxy", "haproxy", "running = true") + &service("dbus", "dbus", "enabled = true");
    let nodes = nodes(&cx, &role, &[]).unwrap();
    let r = apply(&cx, &nodes);
    let err = |id: &str| r.states.iter().find(|s| s.id == id).unwrap().error.clone().unwrap_or_default();
    assert_eq!(err("haproxy"), "unit haproxy.service not found; is its package installed?");
    assert!(
        err("dbus").contains("unit dbus.service can't be enabled: its unit file state is `static`"),
        "{}",
        err("dbus")
    );
    assert_eq!(r.exit_code(), 1);

    // Under --root there is no systemd to ask.
    let tree = tempfile::tempdir().unwrap();
    let cx = support::cx(tree.path());
    let r = check(&cx, &support::nodes(&cx, &service("cron", "cron", "running = true"), &[]).unwrap());
    let e = r.states[0].error.as_deref().unwrap();
    assert!(e.contains("services can only be managed on the running system, not under --root"), "{e}");

    // systemctl refuses when systemd is not PID 1; the error says why in plain words.
    let fake = FakeSystemd::with(&[]);
    *fake.fail.lock().unwrap() =
        Some((1, "System has not been booted with systemd as init system (PID 1). Can't operate.".into()));
    let cx = live(&fake);
    let r = check(&cx, &support::nodes(&cx, &service("cron", "cron", "running = true"), &[]).unwrap());
    let e = r.states[0].error.as_deref().unwrap();
    if Path::new("/run/systemd/system").is_dir() {
        assert!(e.contains("has not been booted with systemd"), "{e}");
    } else {
        assert!(e.contains("systemd is not running as PID 1 here (/run/systemd/system is missing)"), "{e}");
    }
}

#[test]
fn bad_parameters_are_refused_at_compile_time() {
    let fake = FakeSystemd::with(&[]);
    let bad = [
        (service("a", "cron", ""), "needs `enabled` and/or `running`"),
        (service("a", "cr on", "running = true"), "is not a systemd unit name"),
        (service("a", "cron", "running = \"yes\""), "invalid type"),
        (service("a", "cron", "state = \"up\""), "unknown field `state`"),
        (
            service("a", "cron", "running = true") + &service("b", "cron.service", "enabled = true"),
            "state `b` (service) manages unit cron.service, which state `a` (service) at ",
        ),
    ];
    for (role, want) in bad {
        let cx = live(&fake);
        let e = format!("{:#}", support::nodes(&cx, &role, &[]).err().expect(&role));
        assert!(e.contains(want), "{role}: {e}");
    }
    assert_eq!(states::kinds::service::unit_name("nginx").unwrap(), "nginx.service");
    assert_eq!(states::kinds::service::unit_name("getty@tty1").unwrap(), "getty@tty1.service");
    assert_eq!(states::kinds::service::unit_name("apt-daily.timer").unwrap(), "apt-daily.timer");
    assert_eq!(states::kinds::service::unit_name("my.app").unwrap(), "my.app.service");
    assert!(fake.log().is_empty(), "compiling asks systemd nothing");
}
