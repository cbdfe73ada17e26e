//! Secrets derived from another secret: one fleet secret typed once per node stands for
//! several (a replication password, a superuser password, REST API credentials), each its own
//! value. HKDF-SHA256 (RFC 5869) with the secret's label as `info`: knowing one derived value
//! tells nothing of the fleet secret or of another label's value.

use std::collections::BTreeMap;

use hkdf::Hkdf;
use sha2::Sha256;
use states::role::SecretSpec;

/// Salt of the extraction step: fixed, so every node derives the same values.
const SALT: &[u8] = b"bootstrap derived secrets v1";

/// One derived value: 24 bytes as 48 lowercase hex digits (printable, fits every protocol
/// that takes a password: PostgreSQL, HTTP basic authentication, YAML without quoting).
pub fn derive(fleet_secret: &str, label: &str) -> String {
    let hk = Hkdf::<Sha256>::new(Some(SALT), fleet_secret.as_bytes());
    let mut out = [0u8; 24];
    hk.expand(label.as_bytes(), &mut out).expect("24 bytes is a valid HKDF-SHA256 length");
    out.iter().map(|b| format!("{b:02x}")).collect()
}

/// Adds every derived secret of `specs` whose source is in `values`. Returns the names of
/// those whose source is missing (a dry run without it shows them pending).
pub fn add(specs: &[SecretSpec], values: &mut BTreeMap<String, String>) -> Vec<String> {
    let mut missing = Vec::new();
    for spec in specs {
        let Some(d) = &spec.derive else { continue };
        match values.get(&d.from) {
            Some(from) => {
                let v = derive(from, &d.label);
                values.insert(spec.name.clone(), v);
            }
            None => missing.push(spec.name.clone()),
        }
    }
    missing
}

/// The values derived from `from` when it holds `value`: what a rotation of `from` retires
/// along with it (a tool may still print an old replication password).
pub fn of(specs: &[SecretSpec], from: &str, value: &str) -> Vec<String> {
    specs.iter().filter_map(|s| s.derive.as_ref().filter(|d| d.from == from)).map(|d| derive(value, &d.label)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_source_retires_what_was_derived_from_it() {
        let spec = |name: &str, from: &str, label: &str| SecretSpec {
            name: name.into(),
            prompt: String::new(),
            min_length: 8,
            max_length: None,
            generate: false,
            optional: false,
            when: None,
            derive: Some(states::role::Derive { from: from.into(), label: label.into() }),
        };
        let specs = [spec("repl", "fleet", "replication"), spec("other", "elsewhere", "x")];
        assert_eq!(of(&specs, "fleet", "old-fleet-secret"), [derive("old-fleet-secret", "replication")]);
        assert!(of(&specs, "db_password", "x").is_empty());
    }

    #[test]
    fn labels_give_unrelated_values_and_nodes_agree() {
        let a = derive("fleet-secret-0001", "replication");
        assert_eq!(a, derive("fleet-secret-0001", "replication"));
        assert_ne!(a, derive("fleet-secret-0001", "superuser"));
        assert_ne!(a, derive("fleet-secret-0002", "replication"));
        assert_eq!(a.len(), 48);
        assert!(!a.contains("fleet"));
    }
}
