//! The ACME account key: one ECDSA P-256 key per node, made on first use and kept in
//! `/var/lib/bootstrap/acme/account-key.pem` (0600, directory 0700), so every run and every CA
//! sees the same account. Only the key is kept: the account itself is found again from it.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use rcgen::KeyPair;

use crate::engine::atomic::write_plain;
use crate::engine::context::Context;
use crate::sys::x509;

pub fn dir(cx: &Context) -> PathBuf {
    cx.layout().acme_dir()
}

/// The account key as PKCS#8 DER, created if there is none yet.
pub fn load_or_create(cx: &Context) -> Result<Vec<u8>> {
    let dir = dir(cx);
    let path = dir.join("account-key.pem");
    match fs::read_to_string(&path) {
        Ok(pem) => {
            let key = KeyPair::from_pem(&pem).with_context(|| format!("{} is not a usable key", path.display()))?;
            Ok(key.serialize_der())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let key = x509::new_key()?;
            write_plain(&path, key.serialize_pem().as_bytes(), 0o600)?;
            // write_plain makes a missing directory 0700; one that existed is tightened too.
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
            Ok(key.serialize_der())
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}
