//! Certificate bundles as haproxy wants them: one PEM file holding the leaf certificate, its
//! chain and the private key. Inspecting one (names, validity, issuer, does the key match) and
//! making new keys, self-signed certificates and CSRs. Never prints key material.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

use crate::engine::content::sha256_hex;

/// What a bundle holds, as far as deciding whether it is usable goes.
#[derive(Clone, Debug)]
pub struct Bundle {
    /// DNS names of the leaf: its subjectAltNames, or its CN when it has none.
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub issuer: String,
    pub subject: String,
    /// Issuer equals subject: made by `certificate`, not by a CA.
    pub self_signed: bool,
    /// The bundle has a private key and it belongs to the leaf.
    pub key_matches: bool,
    /// sha256 of the leaf's DER: identifies the certificate in records.
    pub fingerprint: String,
}

impl Bundle {
    /// Names of `wanted` the leaf does not cover (wildcards cover one label).
    pub fn uncovered<'a>(&self, wanted: &'a [String]) -> Vec<&'a str> {
        wanted.iter().map(String::as_str).filter(|w| !self.names.iter().any(|n| covers(n, w))).collect()
    }

    /// Whole days until it expires (negative once expired).
    pub fn days_left(&self, now: SystemTime) -> i64 {
        (self.not_after - unix(now)).div_euclid(86_400)
    }

    pub fn expired(&self, now: SystemTime) -> bool {
        self.not_after <= unix(now)
    }
}

fn covers(have: &str, want: &str) -> bool {
    let (have, want) = (have.to_ascii_lowercase(), want.to_ascii_lowercase());
    match have.strip_prefix("*.") {
        Some(parent) => want.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => have == want,
    }
}

pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Parse a PEM bundle: the first certificate is the leaf; the key may come anywhere.
pub fn inspect(pem: &[u8]) -> Result<Bundle> {
    let mut certs = Vec::new();
    let mut key = None;
    for block in Pem::iter_from_buffer(pem) {
        // The error says where, never what: the block may be the key.
        let block = block.map_err(|e| anyhow!("bad PEM block: {e}"))?;
        match block.label.as_str() {
            "CERTIFICATE" => certs.push(block.contents),
            "PRIVATE KEY" => key = Some(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(block.contents))),
            "EC PRIVATE KEY" => key = Some(PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(block.contents))),
            "RSA PRIVATE KEY" => key = Some(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(block.contents))),
            _ => {}
        }
    }
    let leaf = certs.first().ok_or_else(|| anyhow!("no certificate in the file"))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| anyhow!("cannot parse the certificate: {e}"))?;
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_string));
    }
    let key_matches = match &key {
        Some(k) => rustls::crypto::ring::sign::any_supported_type(k)
            .ok()
            .and_then(|s| s.public_key().map(|spki| spki.as_ref() == cert.public_key().raw))
            .unwrap_or(false),
        None => false,
    };
    Ok(Bundle {
        names,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        issuer: cert.issuer().to_string(),
        subject: cert.subject().to_string(),
        self_signed: cert.issuer().as_raw() == cert.subject().as_raw(),
        key_matches,
        fingerprint: sha256_hex(leaf),
    })
}

/// A fresh ECDSA P-256 key: what ACME CAs and haproxy accept everywhere, and cheap to make.
pub fn new_key() -> Result<KeyPair> {
    KeyPair::generate().context("cannot generate a key")
}

fn params(names: &[String]) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(names.to_vec()).context("bad certificate names")?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, names.first().cloned().unwrap_or_default());
    p.distinguished_name = dn;
    Ok(p)
}

fn time(t: SystemTime) -> Result<time::OffsetDateTime> {
    Ok(time::OffsetDateTime::from_unix_timestamp(unix(t))?)
}

/// A self-signed certificate for `names` valid between the two times, with its new key, as one
/// PEM bundle (certificate first, as haproxy reads it).
pub fn self_signed(names: &[String], not_before: SystemTime, not_after: SystemTime) -> Result<Vec<u8>> {
    if names.is_empty() {
        bail!("a certificate needs at least one name");
    }
    let key = new_key()?;
    let mut p = params(names)?;
    p.not_before = time(not_before)?;
    p.not_after = time(not_after)?;
    let cert = p.self_signed(&key).context("cannot make the self-signed certificate")?;
    Ok(format!("{}{}", cert.pem(), key.serialize_pem()).into_bytes())
}

/// `self_signed` valid from an hour ago (clock skew) for `days`.
pub fn self_signed_for_days(names: &[String], days: u32) -> Result<Vec<u8>> {
    let now = SystemTime::now();
    self_signed(names, now - Duration::from_secs(3600), now + Duration::from_secs(u64::from(days) * 86_400))
}

/// A certificate signing request (DER) for `names` with `key`.
pub fn csr(names: &[String], key: &KeyPair) -> Result<Vec<u8>> {
    let req = params(names)?.serialize_request(key).context("cannot make the CSR")?;
    Ok(req.der().to_vec())
}

/// How a bundle is described in summaries: never its bytes.
pub fn describe(b: &Bundle) -> String {
    format!("{} issued by {}, expires {}", b.names.join(", "), b.issuer, date_time(b.not_after))
}

/// Unix seconds as `2025-06-01 12:00 UTC`.
pub fn date_time(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map(|t| format!("{}-{:02}-{:02} {:02}:{:02} UTC", t.year(), t.month() as u8, t.day(), t.hour(), t.minute()))
        .unwrap_or_else(|_| secs.to_string())
}
