//! `apply` and `--check`: compile the states from the inputs (every input error surfaces here,
//! before anything changes), run the engine, show and record the result.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{anyhow, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use states::discovery;
use states::engine::{self, Event, Node};
use states::facts::Facts;
use states::notify::SystemdNotifier;
use states::report::{Mode, Status};
use states::role::{self, Fingerprints};
use states::runner::SystemRunner;
use states::secrets::Secrets;
use states::settings;
use states::template::Templates;
use states::Context;

use crate::cli::{Color, Opts};
use crate::inputs::{self, Inputs};
use crate::output::{self, Painter};
use crate::{lock, report_file, schedule};

/// Compiled states, ready to run.
pub struct Prepared {
    pub cx: Context,
    pub nodes: Vec<Node>,
    pub fingerprints: Fingerprints,
}

/// The converge command: recorded (or given) roles, never prompting.
pub fn converge(opts: &Opts, roles: &[String]) -> Result<i32> {
    let mut inputs = inputs::gather(opts, roles, false)?;
    let _lock = match lock::acquire(&opts.root, !opts.check)? {
        Some(lock::Lock::Busy) => return Ok(lock::busy()),
        held => held,
    };
    let secrets = inputs.secrets();
    scrubbed(&secrets, || {
        let prepared = prepare(opts, &mut inputs)?;
        execute(opts, prepared, if opts.check { Mode::Check } else { Mode::Apply })
    })
}

/// Run `f`; an error from a tool may quote a file it read, so no secret value leaves this way.
pub fn scrubbed<T>(secrets: &Secrets, f: impl FnOnce() -> Result<T>) -> Result<T> {
    f().map_err(|e| anyhow!("{}", secrets.scrub(&format!("{e:#}"))))
}

/// Build the context and compile every state. Touches nothing.
pub fn prepare(opts: &Opts, inputs: &mut Inputs) -> Result<Prepared> {
    let (cx, templates, data) = context(opts, inputs)?;
    let set = std::mem::take(&mut inputs.set);
    let mut templates = templates;
    let (nodes, fingerprints) = role::compile_with_fingerprints(set, &*inputs.source, &cx, &mut templates, &data)?;
    Ok(Prepared { cx, nodes, fingerprints })
}

/// The context, templates and template data (facts, settings, roles, schedule, peers,
/// firewall rules) of a run. Discovery writes its last known peers only when `!opts.check`.
pub fn context(opts: &Opts, inputs: &Inputs) -> Result<(Context, Templates, serde_json::Value)> {
    let minutes = inputs.values.get("schedule_minutes").and_then(|v| v.as_integer()).unwrap_or(15);
    let cron = schedule::expression(&opts.root, minutes)?;
    let cx = Context {
        facts: Facts::gather(&opts.root),
        settings: settings::template_data(inputs.schema(), &inputs.values),
        secrets: inputs.secrets(),
        runner: Box::new(SystemRunner),
        root: opts.root.clone(),
        shared: Default::default(),
    };
    let mut data = json!({
        "facts": cx.facts,
        "settings": cx.settings,
        "roles": inputs.roles,
        "schedule": { "cron": cron },
        "node": node_data(&cx.facts.addresses, &inputs.values),
        // `role.db` etc.: which of the known roles this node has (every name present).
        "role": inputs.source.role_names().iter().map(|r| (r.clone(), json!(inputs.roles.contains(r)))).collect::<serde_json::Map<_, _>>(),
    });
    let templates = Templates::new(&cx.secrets);
    let set = &inputs.set;
    // Peers are looked up before the states compile: templates (haproxy's pools) use them.
    let specs = set
        .discover
        .iter()
        .map(|(name, spec)| Ok((name.clone(), role::resolve_params(spec.clone(), &templates, &data)?)))
        .collect::<Result<_>>()
        .map_err(|e: anyhow::Error| e.context("`[discover]` in the roles"))?;
    data["peers"] = discovery::discover(&cx, &specs, !opts.check)?;
    data["firewall"] = firewall_rules(&set.firewall, &templates, &data)?;
    Ok((cx, templates, data))
}

/// Run the states, show the result, record it (apply only), and return the exit code.
pub fn execute(opts: &Opts, p: Prepared, mode: Mode) -> Result<i32> {
    let cx = &p.cx;
    let painter = Painter { color: use_color(opts.color) };
    let progress = !opts.json && std::io::stderr().is_terminal();
    let mut spinner: Option<ProgressBar> = None;
    let mut stdout = std::io::stdout().lock();
    let mut report = engine::run(cx, &p.nodes, mode, &SystemdNotifier, &mut |event| match event {
        Event::Started { id, kind, target } if progress => {
            let bar = ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap());
            bar.set_message(format!("{id} ({kind} {target})"));
            bar.enable_steady_tick(Duration::from_millis(120));
            spinner = Some(bar);
        }
        Event::Started { .. } => {}
        Event::Finished(r) => {
            if let Some(bar) = spinner.take() {
                bar.finish_and_clear();
            }
            let changed = matches!(r.status, Status::Changed | Status::Pending);
            match r.status {
                Status::Failed => tracing::error!(state = %r.id, kind = %r.kind, status = ?r.status, error = r.error.as_deref().unwrap_or(""), "state failed"),
                // A converged state is the normal case every 15 minutes: not worth a journal entry.
                Status::Unchanged => tracing::debug!(state = %r.id, kind = %r.kind, "state unchanged"),
                _ => tracing::info!(state = %r.id, kind = %r.kind, status = ?r.status, changed, "state"),
            }
            if !opts.json {
                if let Some(line) = output::state_line(&painter, r, opts.verbose) {
                    let _ = stdout.write_all(cx.secrets.scrub(&line).as_bytes());
                }
            }
        }
    })?;
    report_file::classify(&mut report, &p.fingerprints, report_file::load(&opts.root).as_ref());
    tracing::info!(
        mode = ?report.mode,
        changed = report.changed,
        failed = report.failed,
        pending = report.pending,
        duration_ms = report.duration_ms,
        "run finished"
    );
    if mode == Mode::Apply {
        report_file::write(&opts.root, &report)?;
    }
    let text = if opts.json { serde_json::to_string_pretty(&report)? + "\n" } else { output::summary(&painter, &report) };
    stdout.write_all(cx.secrets.scrub(&text).as_bytes())?;
    stdout.flush()?;
    Ok(report.exit_code())
}

/// The firewall rules of the node's roles (settings filled in; empty ones left out) followed by
/// the site's `firewall_extra`, as template data for the firewall state.
fn firewall_rules(from_roles: &[String], templates: &Templates, data: &serde_json::Value) -> Result<serde_json::Value> {
    let mut t = toml::Table::new();
    t.insert("firewall".into(), toml::Value::Array(from_roles.iter().cloned().map(toml::Value::String).collect()));
    let resolved = role::resolve_params(t, templates, data).map_err(|e| e.context("`firewall` rules in the roles"))?;
    let mut rules = serde_json::to_value(&resolved["firewall"])?;
    if let (Some(list), Some(extra)) = (rules.as_array_mut(), data["settings"]["firewall_extra"].as_array()) {
        list.extend(extra.iter().cloned());
    }
    Ok(rules)
}

/// `node.private_address`: the node's address inside the `private_cidr` setting, what it
/// listens on and registers in DNS (null when unset or none matches), and
/// `node.private_address_type`: `A` or `AAAA`.
fn node_data(addresses: &[String], values: &toml::Table) -> serde_json::Value {
    let net = values.get("private_cidr").and_then(|v| v.as_str()).and_then(|c| c.parse::<ipnet::IpNet>().ok());
    let found = net.and_then(|net| {
        addresses.iter().filter_map(|a| a.parse::<std::net::IpAddr>().ok()).find(|ip| net.contains(ip))
    });
    match found {
        Some(ip) => json!({ "private_address": ip.to_string(), "private_address_type": if ip.is_ipv4() { "A" } else { "AAAA" } }),
        None => json!({ "private_address": null, "private_address_type": null }),
    }
}

fn use_color(c: Color) -> bool {
    match c {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    }
}
