//! What an `acme` state remembers between runs, in `/var/lib/bootstrap/acme/<cert path>.json`:
//! which certificate it obtained from which directory, and its failed attempts, so a failing
//! CA is retried with a bounded backoff instead of every 15 minutes forever (CAs rate-limit
//! failed validations). The first failure is retried by the next run; then 5 min, doubling,
//! capped at 6 h. A change of directory or names is a new attempt and is tried at once; so is
//! any attempt once the operator removes the record (after fixing DNS, say).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::engine::atomic::write_plain;
use crate::engine::context::Context;

const FIRST: Duration = Duration::from_secs(5 * 60);
const CAP: Duration = Duration::from_secs(6 * 3600);

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The certificate this state last obtained, and from which directory.
    #[serde(default)]
    pub issued: Option<Issued>,
    /// Consecutive failed attempts.
    #[serde(default)]
    pub failures: u32,
    /// Unix seconds of the last failure.
    #[serde(default)]
    pub last_failure: i64,
    /// What failed: directory and names.
    #[serde(default)]
    pub attempt: String,
    #[serde(default)]
    pub last_error: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    pub directory: String,
    /// sha256 of the leaf certificate's DER.
    pub fingerprint: String,
}

/// How long to wait after `failures` consecutive failures.
pub fn delay(failures: u32) -> Duration {
    match failures {
        0 | 1 => Duration::ZERO,
        n => FIRST.saturating_mul(1u32 << (n - 2).min(16)).min(CAP),
    }
}

/// The record of the certificate at `cert` (a path as the role names it).
pub fn record_path(cx: &Context, cert: &Path) -> PathBuf {
    let name = cert.to_string_lossy().trim_start_matches('/').replace('/', "_");
    cx.layout().acme_dir().join(format!("{name}.json"))
}

impl Record {
    /// The stored record; a missing or unreadable one is empty (it must never block issuance).
    pub fn load(path: &Path) -> Record {
        std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_plain(path, &serde_json::to_vec_pretty(self)?, 0o600)
    }

    /// Unix seconds before which `attempt` must not be tried again; `None`: try now.
    pub fn retry_at(&self, attempt: &str) -> Option<i64> {
        if self.failures == 0 || self.attempt != attempt {
            return None;
        }
        Some(self.last_failure + delay(self.failures).as_secs() as i64)
    }

    pub fn failed(&mut self, attempt: &str, now: i64, error: String) {
        if self.attempt != attempt {
            self.failures = 0;
        }
        self.failures += 1;
        self.last_failure = now;
        self.attempt = attempt.to_string();
        self.last_error = error;
    }

    pub fn succeeded(&mut self, issued: Issued) {
        *self = Record { issued: Some(issued), ..Record::default() };
    }
}
