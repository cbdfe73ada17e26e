//! `bootstrap site keygen` and `bootstrap site pack`: the operator's side of site bundles,
//! signed with minisign (the `minisign` crate).

use std::io::Cursor;
use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use minisign::{KeyPair, SecretKeyBox};
use states::engine::atomic::write_plain;
use states::pipeline::bundle::format;

/// Write DIR/site.key (0600) and DIR/site.pub; refuse to overwrite a key.
pub fn keygen(dir: &Path) -> Result<i32> {
    let (sk_path, pk_path) = (dir.join("site.key"), dir.join("site.pub"));
    for p in [&sk_path, &pk_path] {
        if p.exists() {
            anyhow::bail!("{} exists: not overwriting a key (move it away first)", p.display());
        }
    }
    let kp = KeyPair::generate_unencrypted_keypair().map_err(|e| anyhow!("cannot make a key pair: {e}"))?;
    let sk = kp.sk.to_box(None).map_err(|e| anyhow!("{e}"))?.into_string();
    let pk_box = kp.pk.to_box().map_err(|e| anyhow!("{e}"))?;
    std::fs::create_dir_all(dir)?;
    write_plain(&sk_path, sk.as_bytes(), 0o600)?;
    write_plain(&pk_path, pk_box.into_string().as_bytes(), 0o644)?;
    println!("secret key: {} (keep it off the nodes; sign bundles with it)", sk_path.display());
    println!("public key: {}", pk_path.display());
    println!("install nodes with: --site-key {}", kp.pk.to_base64());
    Ok(0)
}

/// Pack and sign DIR into OUT and OUT.minisig.
pub fn pack(dir: &Path, key: &Path, out: &Path, serial: Option<u64>) -> Result<i32> {
    let serial = serial.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    });
    let text = std::fs::read_to_string(key).with_context(|| format!("cannot read the key {}", key.display()))?;
    let sk = SecretKeyBox::from_string(&text)
        .and_then(|b| b.into_unencrypted_secret_key())
        .map_err(|e| anyhow!("{}: not an unencrypted minisign secret key ({e})", key.display()))?;
    let bytes = format::pack(dir, serial)?;
    let comment = format!("bootstrap site bundle serial {serial}");
    let sig = minisign::sign(None, &sk, Cursor::new(&bytes), Some(&comment), None)
        .map_err(|e| anyhow!("cannot sign: {e}"))?;
    write_plain(out, &bytes, 0o644)?;
    let sig_path = format!("{}.minisig", out.display());
    write_plain(Path::new(&sig_path), sig.into_string().as_bytes(), 0o644)?;
    println!("{}: serial {serial}, {} bytes; signature {sig_path}", out.display(), bytes.len());
    Ok(0)
}
