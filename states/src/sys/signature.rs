//! Detached minisign signatures (Ed25519 over a BLAKE2b prehash), verified with the
//! `minisign-verify` crate: how a node trusts a site bundle and a release.

use anyhow::{anyhow, Result};
pub use minisign_verify::PublicKey;
use minisign_verify::Signature;

/// A public key as `minisign` prints it: the base64 line (`RW…`) or a whole `.pub` file.
pub fn public_key(text: &str) -> Result<PublicKey> {
    let text = text.trim();
    let key = if text.contains('\n') { PublicKey::decode(text) } else { PublicKey::from_base64(text) };
    key.map_err(|e| anyhow!("not a minisign public key ({e}): give the `RW…` line of the .pub file"))
}

/// Check `signature` (a `.minisig` file's text) over `data` with `key`; returns the signed
/// ("trusted") comment.
pub fn verify(key: &PublicKey, data: &[u8], signature: &str) -> Result<String> {
    let sig = Signature::decode(signature).map_err(|e| anyhow!("the signature is not a minisign signature: {e}"))?;
    key.verify(data, &sig, false).map_err(|e| match e {
        minisign_verify::Error::UnexpectedKeyId => anyhow!("signed with another key than the one this node trusts"),
        other => anyhow!("the signature does not match the data ({other}): tampered with, or truncated"),
    })?;
    Ok(sig.trusted_comment().to_string())
}
