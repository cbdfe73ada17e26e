//! Questions on a terminal: settings with their default shown, secrets without echo and asked
//! twice, generated on Enter where the role allows it.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context as _, Result};
use states::role::settings::SettingSpec;
use states::role::SecretSpec;

use crate::secret_sources::check_secret;

/// Prompts are possible: standard input and error are a terminal.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

fn read_line(question: &str) -> Result<String> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line)? == 0 {
        bail!("no answer (end of input)");
    }
    Ok(line.trim().to_string())
}

/// Ask for setting `name` until the answer is valid; Enter takes the default.
pub fn setting(name: &str, spec: &SettingSpec) -> Result<toml::Value> {
    let about = spec.prompt.as_deref().unwrap_or(name);
    let shown = spec.default.as_ref().map(|d| match d {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    loop {
        let q = match &shown {
            Some(d) => format!("{about} ({name}) [{d}]: "),
            None => format!("{about} ({name}): "),
        };
        let answer = read_line(&q)?;
        if answer.is_empty() {
            if let Some(d) = &spec.default {
                return Ok(d.clone());
            }
            eprintln!("  a value is required");
            continue;
        }
        match spec.parse_answer(name, &answer) {
            Ok(v) => return Ok(v),
            Err(e) => eprintln!("  {e}"),
        }
    }
}

/// Ask for a secret without echo, twice, until it meets the rules. Where generation is allowed
/// an empty answer generates one (shown never; it is stored root-only).
pub fn secret(spec: &SecretSpec) -> Result<String> {
    let hint = match (spec.generate, spec.optional) {
        (true, _) => ", Enter to generate one",
        (false, true) => ", Enter to skip",
        _ => "",
    };
    loop {
        let first = rpassword::prompt_password(format!("{} ({}{hint}): ", spec.prompt, spec.name))
            .context("cannot read from the terminal")?;
        if first.is_empty() && spec.generate {
            eprintln!("  generated a random value for {}", spec.name);
            return generate();
        }
        if first.is_empty() && spec.optional {
            return Ok(String::new());
        }
        if let Err(e) = check_secret(spec, &first) {
            eprintln!("  {e}");
            continue;
        }
        let again = rpassword::prompt_password(format!("{} again: ", spec.name))?;
        if again == first {
            return Ok(first);
        }
        eprintln!("  the two entries did not match; try again");
    }
}

/// 32 random characters from a 62-letter alphabet (about 190 bits).
pub fn generate() -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(32);
    while out.len() < 32 {
        let mut buf = [0u8; 64];
        getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        // Rejection sampling keeps every letter equally likely.
        for b in buf.iter().filter(|b| (**b as usize) < 248) {
            if out.len() < 32 {
                out.push(ALPHABET[(*b as usize) % 62] as char);
            }
        }
    }
    Ok(out)
}
