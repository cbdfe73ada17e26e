//! `bootstrap secret set NAME`: rotate one secret (from the environment, credentials,
//! `--secrets-file` or a prompt), then re-apply what depends on it.

use anyhow::{bail, Result};
use states::engine::report::Mode;

use states::pipeline::{self, Peers};

use crate::cli::Opts;
use crate::execute::{execute, Record};
use crate::{prompt, run, secret_sources};

pub fn set(opts: &Opts, name: &str) -> Result<i32> {
    run::with_inputs(opts, &[], false, |inputs| {
        let Some(spec) = inputs.set.secrets.iter().find(|s| s.name == name).cloned() else {
            let names: Vec<&str> = inputs.set.secrets.iter().map(|s| s.name.as_str()).collect();
            bail!("the roles of this node declare no secret `{name}` (they declare: {})", names.join(", "));
        };
        if let Some(d) = &spec.derive {
            bail!("secret `{name}` is derived from `{}` (label `{}`): set that one instead", d.from, d.label);
        }
        let given = secret_sources::explicit(std::slice::from_ref(&spec)).remove(name);
        let value = match given {
            Some(v) => v,
            None if prompt::interactive() => prompt::secret(&spec)?,
            None => return Err(secret_sources::missing_error(&[spec])),
        };
        secret_sources::check_secret(&spec, &value)?;
        // The value in use is the stored one: a new value given in the environment (or
        // credentials) is already what the inputs hold, so what it replaces there may be itself.
        let stored = secret_sources::stored(&opts.root)?.remove(name);
        let held = inputs.secret_values.insert(name.to_string(), value.clone());
        let mut old: Vec<String> = stored.into_iter().chain(held).filter(|v| *v != value).collect();
        old.dedup();
        // A tool may still print the old value (an error about it), or one derived from it:
        // scrubbed too.
        for o in &old {
            inputs.retired.push(o.clone());
            inputs.retired.extend(crate::derived_secrets::of(&inputs.derived, name, o));
        }
        let prepared = pipeline::prepare(inputs.pipeline(opts, Peers::Discover { persist: true })?)?;
        secret_sources::store(&opts.root, &inputs.secret_values)?;
        if !old.is_empty() {
            eprintln!("secret `{name}` replaced; applying what depends on it");
        }
        execute(opts, prepared, Mode::Apply, Record::Yes)
    })
}
