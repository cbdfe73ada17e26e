//! The human report on stdout: what changed or would change, with diffs (colored on a
//! terminal), failures, notifications and a summary line.

use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};
use states::engine::report::{Mode, RunReport, StateReport, Status};

pub struct Painter {
    pub color: bool,
}

impl Painter {
    fn paint(&self, style: Style, text: &str) -> String {
        if self.color {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_string()
        }
    }

    fn fg(&self, c: AnsiColor, text: &str) -> String {
        self.paint(Style::new().fg_color(Some(c.into())), text)
    }
}

/// One state's result, as printed when it is known.
/// `text` safe for a terminal: control characters but newline and tab (ESC sequences from a
/// tool's message, a NUL) and invisible format characters (bidirectional overrides,
/// zero-width) shown as `\u{..}` escapes rather than acted on.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let odd = |c: char| (c.is_control() && c != '\n' && c != '\t') || states::role::settings::invisible(c);
    if !text.chars().any(odd) {
        return text.into();
    }
    text.chars().map(|c| if odd(c) { c.escape_unicode().to_string() } else { c.to_string() }).collect::<String>().into()
}

pub fn state_line(p: &Painter, r: &StateReport, verbose: bool) -> Option<String> {
    let (mark, color) = match r.status {
        Status::Unchanged if !verbose => return None,
        Status::Unchanged => ("=", AnsiColor::BrightBlack),
        Status::Pending => ("~", AnsiColor::Yellow),
        Status::Changed => ("✓", AnsiColor::Green),
        Status::Failed => ("✗", AnsiColor::Red),
        Status::Skipped => ("-", AnsiColor::BrightBlack),
    };
    let target = printable(&r.target);
    let mut s = format!("{} {} {} {target}\n", p.fg(color, mark), r.id, p.fg(AnsiColor::BrightBlack, &r.kind));
    for c in &r.changes {
        let _ = writeln!(s, "    {}", printable(&c.summary));
        if let Some(d) = &c.diff {
            let d = printable(d);
            for line in d.lines() {
                let painted = match line.chars().next() {
                    _ if line.starts_with("+++") || line.starts_with("---") => p.paint(Style::new().bold(), line),
                    Some('+') => p.fg(AnsiColor::Green, line),
                    Some('-') => p.fg(AnsiColor::Red, line),
                    Some('@') => p.fg(AnsiColor::Cyan, line),
                    _ => line.to_string(),
                };
                let _ = writeln!(s, "      {painted}");
            }
        }
    }
    if let Some(e) = &r.error {
        let label = if r.status == Status::Skipped { "skipped" } else { "error" };
        let _ = writeln!(s, "    {}: {}", p.fg(AnsiColor::Red, label), printable(e));
    }
    Some(s)
}

/// Notifications and the summary line, after the states.
pub fn summary(p: &Painter, r: &RunReport) -> String {
    let mut s = String::new();
    for n in &r.notifications {
        let line = match n.status {
            Status::Pending => format!("would {}", n.notification),
            Status::Changed => format!("{} done", n.notification),
            _ => format!(
                "{} failed (kept pending for the next run): {}",
                n.notification,
                printable(n.error.as_deref().unwrap_or(""))
            ),
        };
        let _ = writeln!(s, "notify: {line}");
    }
    if let Some(site) = &r.site {
        let serial = site.serial.map_or("none".into(), |s| s.to_string());
        match &site.error {
            None => {
                let _ = writeln!(s, "site: bundle serial {serial} from {}", site.url);
            }
            Some(e) => {
                let _ = writeln!(
                    s,
                    "{}",
                    p.fg(
                        AnsiColor::Red,
                        &format!("site: failed: {}; the last good bundle (serial {serial}) was used", printable(e))
                    )
                );
            }
        }
    }
    let total = r.states.len();
    let (verb, changed) = match r.mode {
        Mode::Check => ("would change", r.pending),
        Mode::Apply => ("changed", r.changed),
    };
    let line = format!(
        "{}: {total} states, {changed} {verb}, {} failed, {} skipped, {} unchanged ({:.1} ms)",
        if r.mode == Mode::Check { "check" } else { "apply" },
        r.failed,
        r.skipped,
        r.unchanged,
        r.duration_ms
    );
    let color = if r.has_failures() {
        AnsiColor::Red
    } else if changed > 0 {
        AnsiColor::Yellow
    } else {
        AnsiColor::Green
    };
    let _ = writeln!(s, "{}", p.fg(color, &line));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_message_cannot_drive_the_terminal() {
        let msg = "rejected: \u{1b}[2J\u{1b}]0;owned\u{7}\u{0}x\u{202e}txt.exe\nnext\tline";
        let shown = printable(msg);
        assert_eq!(shown, "rejected: \\u{1b}[2J\\u{1b}]0;owned\\u{7}\\u{0}x\\u{202e}txt.exe\nnext\tline");
        assert!(matches!(printable("plain ü"), std::borrow::Cow::Borrowed(_)));
    }
}
