//! `ssh-keygen`: making a node's own key pair, and the public half of a private key. The
//! private key never leaves the file ssh-keygen writes (nothing of it is read back here).

use std::path::Path;

use anyhow::{anyhow, Result};

use crate::engine::runner::{Cmd, Runner};

/// Writes a new ed25519 key pair without a passphrase to `private` and `private.pub`.
pub fn generate(runner: &dyn Runner, private: &Path, comment: &str) -> Result<()> {
    let path = private.to_str().ok_or_else(|| anyhow!("{} is not UTF-8", private.display()))?;
    runner.check(&Cmd::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path]))?;
    Ok(())
}

/// The public key (`ssh-ed25519 AAAA…`, with the key's comment when it has one) of the
/// private key at `private`.
pub fn public_of(runner: &dyn Runner, private: &Path) -> Result<String> {
    let path = private.to_str().ok_or_else(|| anyhow!("{} is not UTF-8", private.display()))?;
    let out = runner.check(&Cmd::new("ssh-keygen").args(["-y", "-f", path]))?;
    let line = out.stdout.trim();
    if !line.starts_with("ssh-") || line.contains('\n') {
        anyhow::bail!("ssh-keygen -y gave no public key for {}", private.display());
    }
    Ok(line.to_string())
}
