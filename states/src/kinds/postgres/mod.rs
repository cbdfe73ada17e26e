//! `pg_role` and `pg_database`: a login role whose password is a secret, and a database with
//! its owner, on the local PostgreSQL server (see `psql.rs` for how it is reached).
//!
//! A password is compared, never blindly reset: the secret is hashed with the stored salt and
//! iteration count and checked against the stored SCRAM verifier, so a converged run changes
//! nothing and a rotated secret is seen. A new password is sent as a verifier computed here,
//! never as cleartext. Nothing is ever dropped: these states only create and alter.
//!
//! On a replica (a standby in recovery, e.g. a Patroni replica) they plan nothing: the server
//! is read-only and what the leader does reaches it by replication.

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use crate::engine::context::Context;
use crate::engine::contract::{Change, Claim, Plan, State, Thing};
use crate::engine::build::{params, Builder};
use crate::sys::psql::{self, ident, literal};
use crate::sys::scram::{self, Verifier};
use crate::sys::scram_checked;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleParams {
    name: String,
    /// The NAME of a secret holding the password; unset: the password is left alone.
    password_secret: Option<String>,
    #[serde(default = "yes")]
    login: bool,
    /// May start streaming replication (a replica's user).
    #[serde(default)]
    replication: bool,
}

fn yes() -> bool {
    true
}

/// The server's roles and databases, asked on its socket while the role compiles (on the
/// running system; a server that is not up yet is the plans' to report).
pub fn early(cx: &Context) {
    if cx.direct() {
        let _ = psql::snapshot(cx);
    }
}

pub fn build_role(t: toml::Table, b: &mut Builder) -> Result<Box<dyn State>> {
    let p: RoleParams = params(t)?;
    psql::check_name("role", &p.name)?;
    if let Some(s) = &p.password_secret {
        let value = b.cx.secrets.get(s).ok_or_else(|| anyhow!("`password_secret`: secret `{s}` is not set (declare it with [[secret]])"))?;
        if !scram::usable_password(value) {
            bail!("`password_secret`: secret `{s}` must be printable ASCII to be used as a PostgreSQL password");
        }
    }
    // No digest of the password: fingerprints are shown in reports, and an unkeyed hash of an
    // operator's password could be guessed offline.
    Ok(Box::new(RoleState { name: p.name, secret: p.password_secret, login: p.login, replication: p.replication }))
}

struct RoleState {
    name: String,
    secret: Option<String>,
    login: bool,
    replication: bool,
}

enum RoleOp {
    Create,
    Login(bool),
    Replication(bool),
    Password,
}

impl RoleState {
    fn password(&self, cx: &Context) -> Result<Option<String>> {
        let Some(s) = &self.secret else { return Ok(None) };
        cx.secrets.get(s).map(|v| Some(v.to_string())).ok_or_else(|| anyhow!("secret `{s}` is not set"))
    }

    /// `PASSWORD '<verifier>'` with a fresh salt: the cleartext stays in this process.
    fn password_clause(&self, cx: &Context) -> Result<String> {
        let pw = self.password(cx)?.ok_or_else(|| anyhow!("role `{}` has no `password_secret`", self.name))?;
        let v = Verifier::new(&pw).map_err(|e| anyhow!("cannot read random bytes for a salt: {e}"))?;
        Ok(format!("PASSWORD {}", literal(&v.to_string())))
    }
}

impl State for RoleState {
    fn claims(&self) -> Vec<Claim> {
        vec![Claim::new(Thing::PgRole(self.name.clone()))]
    }

    fn target(&self) -> String {
        self.name.clone()
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        cx.require_live("PostgreSQL roles")?;
        let snap = psql::snapshot(cx)?;
        if snap.in_recovery {
            return Ok(Plan::default());
        }
        let password = self.password(cx)?;
        let from = self.secret.as_deref().map_or(String::new(), |s| format!(" from secret `{s}`"));
        let mut plan = Plan::default();
        let Some(have) = snap.roles.get(&self.name) else {
            let what = match (self.login, self.replication) {
                (true, true) => "login, replication",
                (true, false) => "login",
                (false, _) => "nologin",
            };
            let pw = if password.is_some() { format!(", password{from}") } else { String::new() };
            plan.push(Change::new(format!("create role {} ({what}{pw})", self.name), RoleOp::Create));
            return Ok(plan);
        };
        if have.login != self.login {
            let verb = if self.login { "allow login" } else { "forbid login" };
            plan.push(Change::new(verb, RoleOp::Login(self.login)));
        }
        if have.replication != self.replication {
            let verb = if self.replication { "allow replication" } else { "forbid replication" };
            plan.push(Change::new(verb, RoleOp::Replication(self.replication)));
        }
        if let Some(pw) = &password {
            let why = match have.password.as_deref() {
                None => Some("no password set"),
                Some(s) => match Verifier::parse(s) {
                    Some(v) if scram_checked::matches(cx, &self.name, s, &v, pw) => None,
                    Some(_) => Some("password differs"),
                    None => Some("password not stored as SCRAM-SHA-256"),
                },
            };
            if let Some(why) = why {
                plan.push(Change::new(format!("{why}: set it{from}"), RoleOp::Password));
            }
        }
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        let login = |l: bool| if l { "LOGIN" } else { "NOLOGIN" }.to_string();
        let (mut create, mut options) = (false, Vec::new());
        for op in plan.ops::<RoleOp>() {
            match op {
                RoleOp::Create => {
                    create = true;
                    options.push(login(self.login));
                    if self.replication {
                        options.push("REPLICATION".into());
                    }
                    if self.secret.is_some() {
                        options.push(self.password_clause(cx)?);
                    }
                }
                RoleOp::Login(l) => options.push(login(*l)),
                RoleOp::Replication(r) => options.push(if *r { "REPLICATION" } else { "NOREPLICATION" }.into()),
                RoleOp::Password => options.push(self.password_clause(cx)?),
            }
        }
        let verb = if create { "CREATE" } else { "ALTER" };
        let sql = format!("{}{verb} ROLE {} WITH {};\n", psql::QUIET, ident(&self.name), options.join(" "));
        psql::execute(cx, &sql)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseParams {
    name: String,
    owner: String,
}

pub fn build_database(t: toml::Table, _b: &mut Builder) -> Result<Box<dyn State>> {
    let p: DatabaseParams = params(t)?;
    psql::check_name("database", &p.name)?;
    psql::check_name("role", &p.owner)?;
    Ok(Box::new(DatabaseState { name: p.name, owner: p.owner }))
}

struct DatabaseState {
    name: String,
    owner: String,
}

enum DatabaseOp {
    Create,
    Owner,
}

impl State for DatabaseState {
    fn claims(&self) -> Vec<Claim> {
        vec![Claim::new(Thing::PgDatabase(self.name.clone()))]
    }

    fn target(&self) -> String {
        self.name.clone()
    }

    fn plan(&self, cx: &Context) -> Result<Plan> {
        cx.require_live("PostgreSQL databases")?;
        let snap = psql::snapshot(cx)?;
        if snap.in_recovery {
            return Ok(Plan::default());
        }
        // Said while planning, so a dry run shows it pending on the role state that makes it.
        if !snap.roles.contains_key(&self.owner) {
            bail!("owner role `{}` does not exist", self.owner);
        }
        let mut plan = Plan::default();
        match snap.databases.get(&self.name) {
            None => plan.push(Change::new(
                format!("create database {} (owner {}, UTF8)", self.name, self.owner),
                DatabaseOp::Create,
            )),
            Some(o) if *o != self.owner => {
                plan.push(Change::new(format!("owner {o} -> {}", self.owner), DatabaseOp::Owner))
            }
            Some(_) => {}
        }
        Ok(plan)
    }

    fn apply(&self, cx: &Context, plan: &Plan) -> Result<()> {
        let (db, owner) = (ident(&self.name), ident(&self.owner));
        let sql = match plan.ops::<DatabaseOp>().next() {
            // template0: the cluster's encoding may be SQL_ASCII (a node installed without a
            // locale); an application database is UTF8 whatever the cluster default.
            Some(DatabaseOp::Create) => format!("CREATE DATABASE {db} OWNER {owner} ENCODING 'UTF8' TEMPLATE template0;\n"),
            Some(DatabaseOp::Owner) => format!("ALTER DATABASE {db} OWNER TO {owner};\n"),
            None => return Ok(()),
        };
        psql::execute(cx, &sql)
    }
}
