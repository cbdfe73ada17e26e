//! `acme`: the bundle at `path` holds a certificate for `names` from the ACME CA at
//! `directory` (RFC 8555), renewed `renew_days` before it expires. `challenge = "http-01"` (the
//! default) answers through haproxy; `challenge = "dns-01"` publishes `_acme-challenge` TXT
//! records through the fleet's RFC 2136 server (`dns_server`, `dns_zone`, `tsig_key_name`,
//! `tsig_secret` as in `dns_record`), so every node can hold a certificate for a shared name.
//!
//! Plan: a missing, unreadable or self-signed bundle, one whose key does not match, that does
//! not cover the names, or that this state obtained from another directory, is to be obtained;
//! one expiring within `renew_days` is to be renewed; anything else (also a valid certificate
//! from another issuer) is left alone. Apply: the local responder answers the CA's challenges
//! on 127.0.0.1:`challenge_port` (haproxy routes `/.well-known/acme-challenge/` there), the
//! order is finalized with a fresh key, and the bundle is checked (parses, covers the names,
//! key matches) before it replaces the current one atomically, 0600. A failed issuance writes
//! nothing: the current certificate (self-signed at worst, see `certificate`) keeps serving.
//!
//! Failures are retried with a backoff (see `acme_backoff`): while it runs, the plan is empty
//! (the state counts as converged, `--check` exits 0) and an info line says when the next
//! attempt is due; the last error stays in the record and in the run that failed.

pub mod account;
pub mod backoff;

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Deserialize;

use backoff::{record_path, Issued, Record};
use crate::sys::acme_client::{obtain, Issue, Solver};
use crate::sys::dns_challenge::DnsSolver;
use crate::sys::dns_client;
use crate::engine::atomic::{self, FileWrite};
use crate::kinds::certificate::{current, defect, names_or_hostname, Current};
use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State};
use crate::engine::build::{display, managed_path, params, Builder};
use crate::sys::x509::{self, unix};

pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    path: PathBuf,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default = "default_directory")]
    directory: String,
    email: Option<String>,
    ca_file: Option<PathBuf>,
    #[serde(default = "default_port")]
    challenge_port: u16,
    #[serde(default = "default_renew_days")]
    renew_days: u32,
    #[serde(default = "default_challenge")]
    challenge: String,
    dns_server: Option<String>,
    dns_zone: Option<String>,
    tsig_key_name: Option<String>,
    /// The NAME of the secret holding the TSIG key.
    tsig_secret: Option<String>,
}

fn default_challenge() -> String {
    "http-01".into()
}

/// Where DNS-01 records go; the key is read from the secrets when they are needed.
struct DnsTarget {
    server: std::net::SocketAddr,
    zone: hickory_net::proto::rr::Name,
    key_name: String,
    secret_name: String,
}

fn default_directory() -> String {
    LETS_ENCRYPT.into()
}
fn default_port() -> u16 {
    8402
}
fn default_renew_days() -> u32 {
    30
}

pub fn build(t: toml::Table, b: &mut Builder) -> Result<Box<dyn State>> {
    let p: Params = params(t)?;
    let path = managed_path(&p.path)?;
    let names = names_or_hostname(p.names, &b.cx.facts.hostname)?;
    let dns = match p.challenge.as_str() {
        "http-01" => {
            if let Some(n) = names.iter().find(|n| n.starts_with("*.")) {
                bail!("`names`: `{n}`: HTTP-01 can't validate a wildcard name (`challenge = \"dns-01\"` can)");
            }
            None
        }
        "dns-01" => {
            let need = |v: Option<String>, what: &str| {
                v.filter(|s| !s.is_empty()).ok_or_else(|| anyhow!("`challenge = \"dns-01\"` needs `{what}`"))
            };
            let server = dns_client::parse_server(&need(p.dns_server, "dns_server")?)?;
            let zone = dns_client::fqdn(&need(p.dns_zone, "dns_zone")?)?;
            let key_name = need(p.tsig_key_name, "tsig_key_name")?;
            let secret_name = need(p.tsig_secret, "tsig_secret")?;
            // Checked now, so a bad key or a name outside the zone stops the run before anything changes.
            let Some(secret) = b.cx.secrets.get(&secret_name) else {
                bail!("secret `{secret_name}` (the TSIG key for `tsig_secret`) is not set");
            };
            let solver = DnsSolver { server, zone: zone.clone(), key_name: key_name.clone(), secret: secret.to_string() };
            dns_client::signer(&key_name, secret)?;
            for n in &names {
                solver.record_name(n).context("`names`")?;
            }
            Some(DnsTarget { server, zone, key_name, secret_name })
        }
        other => bail!("`challenge` must be `http-01` or `dns-01`, not `{other}`"),
    };
    if !p.directory.starts_with("https://") {
        bail!("`directory` must be an https:// URL, not `{}`", p.directory);
    }
    if let Some(e) = &p.email {
        if !e.contains('@') || e.contains(char::is_whitespace) {
            bail!("`email` `{e}` is not an e-mail address");
        }
    }
    let ca_file = p.ca_file.as_deref().map(managed_path).transpose().context("`ca_file`")?;
    Ok(Box::new(AcmeState {
        id: b.id.to_string(),
        path,
        names,
        directory: p.directory,
        email: p.email,
        ca_file,
        challenge_port: p.challenge_port,
        renew_days: p.renew_days,
        dns,
    }))
}

struct AcmeState {
    id: String,
    path: PathBuf,
    names: Vec<String>,
    directory: String,
    email: Option<String>,
    ca_file: Option<PathBuf>,
    challenge_port: u16,
    renew_days: u32,
    dns: Option<DnsTarget>,
}

/// Order a certificate and install it.
struct IssueOp;

impl AcmeState {
    /// What a failure is about: trying another directory or other names starts afresh.
    fn attempt(&self) -> String {
        format!("{} {}", self.directory, self.names.join(","))
    }

    /// What to do now and why ("obtain"/"renew", reason), or `None`.
    fn need(&self, cx: &Context, record: &Record, now: SystemTime) -> Result<Option<(&'static str, String)>> {
        let obtain = |why: String| Ok(Some(("obtain", why)));
        let b = match current(cx, &self.path)? {
            Current::Missing => return obtain("there is none".into()),
            Current::Unreadable(e) => return obtain(format!("the file is not a usable bundle: {e}")),
            Current::Present(b) => b,
        };
        if b.self_signed {
            return obtain("the current one is self-signed".into());
        }
        if let Some(why) = defect(&b, &self.names, now) {
            return obtain(why);
        }
        if let Some(i) = record.issued.as_ref().filter(|i| i.fingerprint == b.fingerprint && i.directory != self.directory) {
            return obtain(format!("the current one is from {}", i.directory));
        }
        let left = b.days_left(now);
        // A CA issuing short-lived certificates (step-ca: 24 h) would otherwise be asked again
        // at every run: renew with a third of the lifetime left at the latest.
        let lifetime_days = (b.not_after - b.not_before) / 86_400;
        let threshold = i64::from(self.renew_days).min(lifetime_days / 3);
        Ok((left < threshold).then(|| ("renew", format!("expires in {left} days"))))
    }

    /// The new bundle and its leaf's fingerprint, checked; nothing written yet.
    fn issue(&self, cx: &Context) -> Result<(Vec<u8>, String)> {
        let extra_ca = match &self.ca_file {
            Some(f) => Some(std::fs::read(cx.path(f)).with_context(|| format!("cannot read `ca_file` {}", f.display()))?),
            None => None,
        };
        let account_key = account::load_or_create(cx)?;
        let dns = match &self.dns {
            Some(d) => {
                let secret = cx.secrets.get(&d.secret_name).ok_or_else(|| anyhow!("secret `{}` is not set", d.secret_name))?;
                Some(DnsSolver { server: d.server, zone: d.zone.clone(), key_name: d.key_name.clone(), secret: secret.to_string() })
            }
            None => None,
        };
        let solver = match &dns {
            Some(d) => Solver::Dns(d),
            None => Solver::Http { port: self.challenge_port },
        };
        let bundle = obtain(&Issue {
            directory: &self.directory,
            names: &self.names,
            email: self.email.as_deref(),
            extra_ca: extra_ca.as_deref(),
            account_key: &account_key,
            solver,
        })?;
        // What the CA sent must be able to serve before it replaces anything.
        let b = x509::inspect(&bundle).context("the CA's certificate can't be read")?;
        if let Some(why) = defect(&b, &self.names, SystemTime::now()) {
            bail!("the CA's certificate is unusable: {why}");
        }
        Ok((bundle, b.fingerprint))
    }
}

impl State for AcmeState {
    /// The certificate file is shared with the self-signed `certificate` state it replaces.
    fn claims(&self) -> Vec<Claim> {
        vec![Claim::path(&self.path).shared_with("certificate")]
    }

    fn target(&self) -> String {
        display(&self.path)
    }

    fn digest(&self) -> Option<String> {
        Some(self.names.join(","))
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        let now = SystemTime::now();
        let record = Record::load(&record_path(cx, &self.path));
        let mut plan = Plan::default();
        let Some((verb, why)) = self.need(cx, &record, now)? else {
            return Ok(plan);
        };
        if let Some(at) = record.retry_at(&self.attempt()).filter(|at| *at > unix(now)) {
            tracing::info!(
                state = %self.id,
                "ACME retry after {} ({} failures; last: {}); {why}",
                x509::date_time(at),
                record.failures,
                record.last_error
            );
            return Ok(plan);
        }
        plan.push(Change::new(
            format!("{verb} certificate from {} for {} ({why})", self.directory, self.names.join(", ")),
            IssueOp,
        ));
        Ok(plan)
    }

    fn apply(&self, cx: &Context, _plan: &Plan) -> Result<()> {
        let record_file = record_path(cx, &self.path);
        let mut record = Record::load(&record_file);
        match self.issue(cx) {
            Ok((bundle, fingerprint)) => {
                let w = FileWrite { uid: None, gid: None, mode: 0o600, validate: None, secret: true };
                atomic::write_file(cx, &self.path, &bundle, &w)?;
                record.succeeded(Issued { directory: self.directory.clone(), fingerprint });
                record.save(&record_file)
            }
            Err(e) => {
                let msg = format!("{e:#}");
                record.failed(&self.attempt(), unix(SystemTime::now()), msg.clone());
                record.save(&record_file)?;
                let next = match backoff::delay(record.failures).as_secs() {
                    0 => "the next run retries".to_string(),
                    s => format!("retry after {}", x509::date_time(record.last_failure + s as i64)),
                };
                let (dir, n) = (&self.directory, record.failures);
                bail!("ACME issuance from {dir} failed (attempt {n}; {next}); the current certificate stays: {msg}")
            }
        }
    }
}
