//! Running compiled states: the engine with a progress spinner on a terminal, one journal entry
//! per state that did something, the report shown (human or JSON) and recorded on the node.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use states::engine::notify::SystemdNotifier;
use states::engine::report::{Mode, StateReport, Status};
use states::engine::run::{self as engine, Event};
use states::pipeline::Prepared;

use crate::cli::{Color, Opts};
use crate::output::{self, Painter};
use crate::report_file;

/// `--check` plans only; otherwise apply.
pub fn mode(opts: &Opts) -> Mode {
    if opts.check {
        Mode::Check
    } else {
        Mode::Apply
    }
}

/// Whether a run's report becomes the node's last run (`decommission`'s does not).
#[derive(PartialEq, Eq)]
pub enum Record {
    Yes,
    No,
}

/// One journal entry per state that did something, readable on its own: the state, what it
/// manages, its result and what changed (already scrubbed of secrets by the engine).
fn log_state(r: &StateReport, changed: bool) {
    let status = r.status.as_str();
    // A converged state is the normal case every 15 minutes: not worth a journal entry, nor
    // building one.
    if r.status == Status::Unchanged {
        tracing::debug!(state = %r.id, kind = %r.kind, status, "{} ({} {}): {status}", r.id, r.kind, r.target);
        return;
    }
    let line = format!("{} ({} {}): {status}", r.id, r.kind, r.target);
    let error = r.error.as_deref().unwrap_or("");
    match r.status {
        Status::Failed => tracing::error!(state = %r.id, kind = %r.kind, status, "{line}: {error}"),
        Status::Skipped => tracing::warn!(state = %r.id, kind = %r.kind, status, "{line}: {error}"),
        _ => {
            let what: Vec<&str> = r.changes.iter().map(|c| c.summary.as_str()).collect();
            tracing::info!(state = %r.id, kind = %r.kind, status, changed, "{line}: {}", what.join("; "))
        }
    }
}

/// Run the states, show the result, record it (apply only), and return the exit code.
pub fn execute(opts: &Opts, p: Prepared, mode: Mode, record: Record) -> Result<i32> {
    let cx = &p.cx;
    let painter = Painter { color: use_color(opts.color) };
    let progress = !opts.json && std::io::stderr().is_terminal();
    let mut spinner: Option<ProgressBar> = None;
    let mut stdout = std::io::stdout().lock();
    let mut report = engine::run(cx, &p.nodes, mode, &SystemdNotifier, &mut |event| match event {
        Event::Started { id, kind, target } if progress => {
            let bar = ProgressBar::new_spinner()
                .with_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap());
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
            log_state(r, changed);
            if !opts.json {
                if let Some(line) = output::state_line(&painter, r, opts.verbose) {
                    let _ = stdout.write_all(cx.secrets.scrub(&line).as_bytes());
                }
            }
        }
    })?;
    report.site = p.site.clone().map(|mut site| {
        // A bundle that did not compile may be told by an error that quotes its inputs.
        site.error = site.error.map(|e| cx.secrets.scrub(&e));
        site
    });
    report_file::classify(&mut report, &p.fingerprints, report_file::load(&opts.root).as_ref());
    let mode_name = if report.mode == Mode::Check { "check" } else { "apply" };
    tracing::info!(
        mode = mode_name,
        changed = report.changed,
        failed = report.failed,
        pending = report.pending,
        duration_ms = report.duration_ms,
        "run finished ({mode_name}): {} states, {} changed, {} pending, {} failed, {} skipped in {:.0} ms",
        report.states.len(),
        report.changed,
        report.pending,
        report.failed,
        report.skipped,
        report.duration_ms
    );
    if mode == Mode::Apply && record == Record::Yes {
        report_file::write(&opts.root, &report)?;
    }
    let text =
        if opts.json { serde_json::to_string_pretty(&report)? + "\n" } else { output::summary(&painter, &report) };
    stdout.write_all(cx.secrets.scrub(&text).as_bytes())?;
    stdout.flush()?;
    Ok(report.exit_code())
}

fn use_color(c: Color) -> bool {
    match c {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    }
}
