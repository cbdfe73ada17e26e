//! Stored SCRAM verifiers already found to match a secret. PBKDF2's 4096 rounds make a check
//! cost over a millisecond, for every role, on every run of the leader; a check that passed
//! is remembered as one tag per role: HMAC-SHA256 keyed with the secret over the role's name
//! and the stored verifier, in a root-only directory beside the secrets store (which holds
//! the secret itself, so the tag tells a reader nothing new). The same verifier with the same
//! secret is then known to match; anything else (a new password, an edited verifier, another
//! secret) is checked in full. A dry run reads tags but writes none.

use std::fs;
use std::path::Path;

use data_encoding::HEXLOWER;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::engine::atomic;
use crate::engine::context::Context;
use crate::sys::scram::Verifier;

const DIR: &str = "scram-checked";

/// Whether `stored` (the role's `rolpassword`, parsed as `verifier`) is `password`'s. On the
/// running system a passed check is remembered; elsewhere (tests) every check is made.
pub fn matches(cx: &Context, role: &str, stored: &str, verifier: &Verifier, password: &str) -> bool {
    if !cx.direct() {
        return verifier.matches(password);
    }
    matches_in(&cx.layout().state_dir().join(DIR), !cx.shared.is_check(), role, stored, verifier, password)
}

/// `matches` with its tags in `dir`; `record`: write the tag of a passed check.
pub fn matches_in(dir: &Path, record: bool, role: &str, stored: &str, verifier: &Verifier, password: &str) -> bool {
    let path = dir.join(role);
    let mac = mac(role, stored, password);
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

fn mac(role: &str, stored: &str, password: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(password.as_bytes()).expect("HMAC takes any key length");
    for part in ["bootstrap scram-checked v1", role, stored] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passed_check_is_remembered_for_that_verifier_and_secret_only() {
        let dir = tempfile::tempdir().unwrap();
        let v = Verifier::compute("canary-pw-0001", b"0123456789abcdef", 4096);
        let stored = v.to_string();
        assert!(matches_in(dir.path(), true, "app", &stored, &v, "canary-pw-0001"));
        let tag = fs::read_to_string(dir.path().join("app")).unwrap();
        assert!(!tag.contains("canary"), "the tag is not the secret");
        // A wrong tag for a verifier that matches is replaced by the right one.
        fs::write(dir.path().join("app"), "00\n").unwrap();
        assert!(matches_in(dir.path(), true, "app", &stored, &v, "canary-pw-0001"));
        assert_eq!(fs::read_to_string(dir.path().join("app")).unwrap(), tag);
        // Another secret, the same verifier: checked in full, and it does not match.
        assert!(!matches_in(dir.path(), true, "app", &stored, &v, "canary-pw-0002"));
        // The tag is bound to the verifier: a password changed behind our back is noticed.
        let other = Verifier::compute("canary-pw-0002", b"fedcba9876543210", 4096);
        assert!(!matches_in(dir.path(), true, "app", &other.to_string(), &other, "canary-pw-0001"));
        // And to the role.
        assert!(!dir.path().join("db").exists());
        assert!(matches_in(dir.path(), false, "db", &stored, &v, "canary-pw-0001"));
        assert!(!dir.path().join("db").exists(), "a dry run writes no tag");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(dir.path().join("app")).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_remembered_tag_spares_the_full_check() {
        let dir = tempfile::tempdir().unwrap();
        let v = Verifier::compute("canary-pw-0001", b"0123456789abcdef", 4096);
        assert!(matches_in(dir.path(), true, "app", &v.to_string(), &v, "canary-pw-0001"));
        // A verifier whose keys don't match its text: only the tag can say yes.
        let mut forged = v.clone();
        forged.stored_key = [0; 32];
        assert!(matches_in(dir.path(), true, "app", &v.to_string(), &forged, "canary-pw-0001"));
        assert!(!forged.matches("canary-pw-0001"));
    }
}
