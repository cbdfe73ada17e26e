//! `sysctl`: a kernel parameter, persisted and live.
//!
//! Persisted as one file per key, `/etc/sysctl.d/60-bootstrap-<name>.conf` (systemd-sysctl
//! applies it at boot): a key has one value, so the file name follows the key, and two states
//! for the same key are refused when the role is compiled. Live, the value is read from and
//! written to `/proc/sys/<name with dots as slashes>`; values are compared with whitespace
//! normalized, since the kernel prints `4096\t131072\t6291456` for `4096 131072 6291456`.
//! Under `--root` only the file is managed: the running kernel belongs to another system.

use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use crate::files::conf_file::ConfFile;
use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State, Thing};
use crate::engine::build::{params, Builder};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    name: String,
    value: toml::Value,
}

pub fn build(t: toml::Table, b: &mut Builder) -> Result<Box<dyn State>> {
    let p: Params = params(t)?;
    let ok = |part: &str| {
        !part.is_empty() && part.bytes().all(|c| c.is_ascii_alphanumeric() || b"_-:@".contains(&c))
    };
    if !p.name.split('.').all(ok) {
        bail!("`name` `{}` is not a sysctl key like `net.ipv4.ip_forward`", p.name);
    }
    let value = match p.value {
        toml::Value::String(s) => s.trim().to_string(),
        toml::Value::Integer(i) => i.to_string(),
        other => bail!("`value` must be a string or an integer, not {}", other.type_str()),
    };
    if value.is_empty() || value.contains(['\n', '\r']) {
        bail!("`value` must be one non-empty line");
    }
    let text = format!(
        "# managed by bootstrap (state `{}`); local changes are overwritten\n{} = {value}\n",
        b.id, p.name
    );
    let file = ConfFile {
        path: PathBuf::from(format!("/etc/sysctl.d/60-bootstrap-{}.conf", p.name)),
        bytes: text.into_bytes(),
    };
    Ok(Box::new(SysctlState { name: p.name, value, file }))
}

struct SysctlState {
    name: String,
    value: String,
    file: ConfFile,
}

/// Write the value to the running kernel.
struct LiveOp;

fn normalize(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl SysctlState {
    fn proc_path(&self, cx: &Context) -> PathBuf {
        cx.path("/proc/sys").join(self.name.replace('.', "/"))
    }
}

impl State for SysctlState {
    fn claims(&self) -> Vec<Claim> {
        vec![Claim::path(&self.file.path), Claim::new(Thing::Sysctl(self.name.clone()))]
    }

    fn target(&self) -> String {
        self.name.clone()
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        let mut plan = Plan { changes: self.file.plan(cx)? };
        if !cx.is_live() {
            for c in &mut plan.changes {
                c.summary += " (file only: the live value is not set under --root)";
            }
            return Ok(plan);
        }
        let proc = self.proc_path(cx);
        let have = match fs::read_to_string(&proc) {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::NotFound => bail!(
                "unknown sysctl key `{}`: there is no {} (misspelt, or its kernel module is not loaded)",
                self.name,
                proc.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", proc.display())),
        };
        if normalize(&have) != normalize(&self.value) {
            plan.push(Change::new(format!("set live value {} -> {}", normalize(&have), self.value), LiveOp));
        }
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        // Live first: the kernel is the one judge of a value, and a value it rejects must not be
        // persisted for the next boot.
        if plan.ops::<LiveOp>().next().is_some() {
            let proc = self.proc_path(cx);
            fs::write(&proc, format!("{}\n", self.value)).with_context(|| {
                format!("cannot set {} = {} (writing {})", self.name, self.value, proc.display())
            })?;
        }
        self.file.apply(cx, plan)
    }
}
