//! Stored SCRAM verifiers already found to match a secret. PBKDF2's 4096 rounds make a check
//! cost over a millisecond, for every role, on every run of the leader; a check that passed
//! is remembered as one tag per role: HMAC-SHA256 with a random key of this node's (root-only,
//! beside the secrets store) over the role's name, the stored verifier and the secret, in a
//! root-only directory under `/var/lib/bootstrap`. Without the key a tag is no faster a way to
//! test guesses than the verifier itself. The same verifier with the same secret is then known
//! to match; anything else (a new password, an edited verifier, another secret) is checked in
//! full. A dry run reads tags but writes none (nor the key).

use std::fs;
use std::path::Path;

use data_encoding::HEXLOWER;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::engine::atomic;
use crate::engine::context::Context;
use crate::engine::layout::SCRAM_KEY;
use crate::sys::scram::Verifier;

const DIR: &str = "scram-checked";

/// Whether `stored` (the role's `rolpassword`, parsed as `verifier`) is `password`'s. On the
/// running system a passed check is remembered; elsewhere (tests) every check is made.
pub fn matches(cx: &Context, role: &str, stored: &str, verifier: &Verifier, password: &str) -> bool {
    if !cx.direct() {
        return verifier.matches(password);
    }
    let record = !cx.shared.is_check();
    match key(&cx.path(SCRAM_KEY), record) {
        Some(key) => matches_in(&cx.layout().state_dir().join(DIR), &key, record, role, stored, verifier, password),
        None => verifier.matches(password),
    }
}

/// The node's key: made (32 random bytes, 0600) on first use when `make`.
fn key(path: &Path, make: bool) -> Option<Vec<u8>> {
    if let Ok(k) = fs::read(path) {
        return (k.len() == 32).then_some(k);
    }
    if !make {
        return None;
    }
    let mut k = vec![0u8; 32];
    std::io::Read::read_exact(&mut fs::File::open("/dev/urandom").ok()?, &mut k).ok()?;
    atomic::write_plain(path, &k, 0o600).ok()?;
    Some(k)
}

/// `matches` with its tags in `dir`, keyed with `key`; `record`: write the tag of a passed check.
pub fn matches_in(
    dir: &Path,
    key: &[u8],
    record: bool,
    role: &str,
    stored: &str,
    verifier: &Verifier,
    password: &str,
) -> bool {
    let path = dir.join(role);
    let mac = mac(key, role, stored, password);
    let known = fs::read_to_string(&path)
        .ok()
        .and_then(|t| HEXLOWER.decode(t.trim().as_bytes()).ok())
        .is_some_and(|tag| mac.clone().verify_slice(&tag).is_ok());
    if known {
        return true;
    }
    let ok = verifier.matches(password);
    if ok && record {
        // A tag not written only costs the next run a full check.
        let tag = HEXLOWER.encode(&mac.finalize().into_bytes());
        let _ = atomic::write_plain(&path, format!("{tag}\n").as_bytes(), 0o600);
    }
    ok
}

fn mac(key: &[u8], role: &str, stored: &str, password: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for part in ["bootstrap scram-checked v2", role, stored, password] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_passed_check_is_remembered_for_that_verifier_and_secret_only() {
        let dir = tempfile::tempdir().unwrap();
        let v = Verifier::compute("canary-pw-0001", b"0123456789abcdef", 4096);
        let stored = v.to_string();
        assert!(matches_in(dir.path(), K, true, "app", &stored, &v, "canary-pw-0001"));
        let tag = fs::read_to_string(dir.path().join("app")).unwrap();
        assert!(!tag.contains("canary"), "the tag is not the secret");
        // A wrong tag for a verifier that matches is replaced by the right one.
        fs::write(dir.path().join("app"), "00\n").unwrap();
        assert!(matches_in(dir.path(), K, true, "app", &stored, &v, "canary-pw-0001"));
        assert_eq!(fs::read_to_string(dir.path().join("app")).unwrap(), tag);
        // Another secret, the same verifier: checked in full, and it does not match.
        assert!(!matches_in(dir.path(), K, true, "app", &stored, &v, "canary-pw-0002"));
        // The tag is bound to the verifier: a password changed behind our back is noticed.
        let other = Verifier::compute("canary-pw-0002", b"fedcba9876543210", 4096);
        assert!(!matches_in(dir.path(), K, true, "app", &other.to_string(), &other, "canary-pw-0001"));
        // And to the node's key: another key's tag is worth nothing.
        assert!(!matches_in(
            dir.path(),
            b"another key, another node's 32b",
            false,
            "app",
            &stored,
            &{
                let mut f = v.clone();
                f.stored_key = [0; 32];
                f
            },
            "canary-pw-0001"
        ));
        // And to the role.
        assert!(!dir.path().join("db").exists());
        assert!(matches_in(dir.path(), K, false, "db", &stored, &v, "canary-pw-0001"));
        assert!(!dir.path().join("db").exists(), "a dry run writes no tag");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(dir.path().join("app")).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_remembered_tag_spares_the_full_check() {
        let dir = tempfile::tempdir().unwrap();
        let v = Verifier::compute("canary-pw-0001", b"0123456789abcdef", 4096);
        assert!(matches_in(dir.path(), K, true, "app", &v.to_string(), &v, "canary-pw-0001"));
        // A verifier whose keys don't match its text: only the tag can say yes.
        let mut forged = v.clone();
        forged.stored_key = [0; 32];
        assert!(matches_in(dir.path(), K, true, "app", &v.to_string(), &forged, "canary-pw-0001"));
        assert!(!forged.matches("canary-pw-0001"));
    }
}
