//! `certificate` and `acme` against temporary roots: self-signed creation, idempotence and
//! drift; no key material in any plan; a CA's certificate is left alone; ACME planning
//! (obtain, nothing, renew) and the retry backoff, without a CA.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use states::engine::report::{RunReport, Status};
use states::kinds::acme::backoff::{delay, Record};
use states::sys::challenge::Responder;
use states::sys::x509;
use support::*;

const DAY: Duration = Duration::from_secs(86_400);
const CERT: &str = "/etc/haproxy/certs/site.pem";

fn role_cert(names: &str) -> String {
    format!("[[state]]\nid = \"cert\"\ntype = \"certificate\"\npath = \"{CERT}\"\nnames = {names}\n")
}

fn role_acme(names: &str, extra: &str) -> String {
    format!(
        "{}\n[[state]]\nid = \"acme\"\ntype = \"acme\"\npath = \"{CERT}\"\nnames = {names}\n\
         directory = \"https://acme.test/dir\"\nrequires = [\"cert\"]\n{extra}",
        role_cert(names)
    )
}

fn summaries(r: &RunReport, id: &str) -> Vec<String> {
    r.states.iter().find(|s| s.id == id).unwrap().changes.iter().map(|c| c.summary.clone()).collect()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o7777
}

/// A bundle signed by a throwaway CA (as an ACME CA would), valid from `from` to `until`.
fn ca_signed(names: &[&str], from: SystemTime, until: SystemTime) -> Vec<u8> {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "Test Intermediate");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, names[0]);
    p.not_before = time::OffsetDateTime::from_unix_timestamp(x509::unix(from)).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(x509::unix(until)).unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap();
    format!("{}{}", cert.pem(), key.serialize_pem()).into_bytes()
}

/// The key's base64 lines: none of them may appear in any output.
fn key_lines(bundle: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bundle);
    let key = text.split("-----BEGIN PRIVATE KEY-----").nth(1).unwrap();
    key.lines().filter(|l| l.len() > 8 && !l.starts_with("-----")).map(str::to_string).collect()
}

fn assert_no_key_material(r: &RunReport, bundle: &[u8]) {
    let shown = serde_json::to_string(r).unwrap();
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    for l in key_lines(bundle) {
        assert!(!shown.contains(&l), "key material in the report: {shown}");
    }
}

#[test]
fn self_signed_is_created_0600_idempotent_and_healed() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let nodes = support::nodes(&cx, &role_cert(r#"["app.example.test", "www.example.test"]"#), &[]).unwrap();
    let file = root.path().join(CERT.trim_start_matches('/'));

    let r = check(&cx, &nodes);
    assert_eq!(
        summaries(&r, "cert"),
        ["create self-signed certificate for app.example.test, www.example.test (there is none)"]
    );
    assert!(r.states[0].changes[0].diff.is_none());
    assert!(!file.exists());

    assert_eq!(apply(&cx, &nodes).changed, 1);
    assert_eq!(mode(&file), 0o600);
    let first = fs::read(&file).unwrap();
    let b = x509::inspect(&first).unwrap();
    assert!(b.self_signed && b.key_matches, "{b:?}");
    assert_eq!(b.names, ["app.example.test", "www.example.test"]);
    assert_eq!(b.days_left(SystemTime::now()), 90);
    let r = apply(&cx, &nodes);
    assert_eq!(r.changed, 0);
    assert_eq!(fs::read(&file).unwrap(), first, "a valid certificate is kept");
    assert_eq!(check(&cx, &nodes).pending, 0);

    // Mode drift alone is fixed in place (the key stays the same).
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(summaries(&check(&cx, &nodes), "cert"), ["mode 0644 -> 0600"]);
    apply(&cx, &nodes);
    assert_eq!((mode(&file), fs::read(&file).unwrap()), (0o600, first.clone()));

    // Deleted, garbage, expired, foreign key: each replaced, never shown.
    let names: Vec<String> = vec!["app.example.test".into(), "www.example.test".into()];
    let now = SystemTime::now();
    let expired = x509::self_signed(&names, now - 100 * DAY, now - DAY).unwrap();
    let other = x509::self_signed_for_days(&names, 90).unwrap();
    let split = |b: &[u8]| {
        let s = String::from_utf8_lossy(b).to_string();
        let at = s.find("-----BEGIN PRIVATE KEY").unwrap();
        (s[..at].to_string(), s[at..].to_string())
    };
    let mismatched = split(&first).0 + &split(&other).1;
    let no_key = split(&first).0;
    let cases: [(Option<&[u8]>, &str); 5] = [
        (None, "(there is none)"),
        (Some(b"not a certificate\n"), "(the file is not a usable bundle: no certificate in the file)"),
        (Some(&expired), "(it expired (app.example.test, www.example.test issued by CN=app.example.test, expires "),
        (Some(mismatched.as_bytes()), "(its private key is missing or does not match)"),
        (Some(no_key.as_bytes()), "(its private key is missing or does not match)"),
    ];
    for (content, why) in cases {
        let before = fs::read(&file).unwrap();
        match content {
            None => fs::remove_file(&file).unwrap(),
            Some(c) => fs::write(&file, c).unwrap(),
        }
        let r = check(&cx, &nodes);
        let s = &summaries(&r, "cert")[0];
        assert!(
            s.starts_with("create self-signed certificate for app.example.test, www.example.test ") && s.contains(why),
            "{s}"
        );
        assert_no_key_material(&r, &before);
        let r = apply(&cx, &nodes);
        assert_eq!(r.changed, 1, "{why}");
        assert_no_key_material(&r, &before);
        assert_no_key_material(&r, &fs::read(&file).unwrap());
        let b = x509::inspect(&fs::read(&file).unwrap()).unwrap();
        assert!(b.key_matches && !b.expired(SystemTime::now()), "{why}: {b:?}");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(apply(&cx, &nodes).changed, 0);
    }

    // Other names: a new certificate covering them.
    let nodes = support::nodes(&cx, &role_cert(r#"["app.example.test", "api.example.test"]"#), &[]).unwrap();
    assert_eq!(
        summaries(&check(&cx, &nodes), "cert"),
        ["create self-signed certificate for app.example.test, api.example.test (it does not cover api.example.test)"]
    );
    apply(&cx, &nodes);
    assert_eq!(x509::inspect(&fs::read(&file).unwrap()).unwrap().names, ["app.example.test", "api.example.test"]);
}

#[test]
fn names_default_to_the_hostname_and_are_checked() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let role = format!("[[state]]\nid = \"cert\"\ntype = \"certificate\"\npath = \"{CERT}\"\ndays = 7\n");
    let nodes = support::nodes(&cx, &role, &[]).unwrap();
    assert_eq!(summaries(&check(&cx, &nodes), "cert"), ["create self-signed certificate for node1 (there is none)"]);
    apply(&cx, &nodes);
    let b = x509::inspect(&fs::read(root.path().join(CERT.trim_start_matches('/'))).unwrap()).unwrap();
    assert_eq!(b.names, ["node1"]);
    // Whole days: 6 once a second has passed since it was made.
    assert!((6..=7).contains(&b.days_left(SystemTime::now())), "{}", b.days_left(SystemTime::now()));

    let bad = |r: &str| format!("{:#}", support::nodes(&cx, r, &[]).err().expect("accepted"));
    assert!(bad(&role_cert(r#"["no spaces allowed"]"#)).contains("is not a DNS name"));
    assert!(bad(&(role_cert("[]") + "days = 0\n")).contains("`days` must be at least 1"));
    assert!(bad(&role_acme(r#"["a.test"]"#, "directory2 = 1\n")).contains("unknown field `directory2`"));
    assert!(bad(&role_acme(r#"["*.a.test"]"#, "")).contains("HTTP-01 can't validate a wildcard name"));
    assert!(bad(&role_acme(r#"["a.test"]"#, "").replace("https://acme.test", "http://acme.test"))
        .contains("must be an https:// URL"));
    // DNS-01: the fleet's server and key, and names inside its zone.
    let dns = |names: &str, extra: &str| {
        role_acme(
            names,
            &format!("challenge = \"dns-01\"\ndns_server = \"198.18.0.1:53\"\ndns_zone = \"lab.test\"\n{extra}"),
        )
    };
    let key = "tsig_key_name = \"bootstrap\"\ntsig_secret = \"dns_tsig_key\"\n";
    assert!(bad(&dns(r#"["a.lab.test"]"#, "")).contains("needs `tsig_key_name`"));
    assert!(bad(&dns(r#"["a.lab.test"]"#, "tsig_key_name = \"k\"\ntsig_secret = \"nope\"\n")).contains("secret `nope`"));
    let mut cx = cx;
    cx.secrets.insert("dns_tsig_key", "q8T0mUQ0m3CHsmp2cC1ItHzMmkzSePWCT7PyBoDGDd8=".into());
    let bad = |r: &str| format!("{:#}", support::nodes(&cx, r, &[]).err().expect("accepted"));
    assert!(bad(&dns(r#"["www.example.com"]"#, key)).contains("is not inside the zone lab.test."));
    assert!(bad(&role_acme(r#"["a.test"]"#, "challenge = \"tls-alpn-01\"\n")).contains("must be `http-01` or `dns-01`"));
    support::nodes(&cx, &dns(r#"["*.lab.test", "www.lab.test"]"#, key), &[]).expect("a wildcard by DNS-01");
}

#[test]
fn a_valid_certificate_from_a_ca_is_left_alone_by_both() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let nodes = support::nodes(&cx, &role_acme(r#"["app.example.test"]"#, ""), &[]).unwrap();
    let file = root.path().join(CERT.trim_start_matches('/'));
    let now = SystemTime::now();
    let bundle = ca_signed(&["app.example.test", "other.example.test"], now - DAY, now + 60 * DAY);
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, &bundle).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    let r = check(&cx, &nodes);
    assert_eq!(r.pending, 0, "{:?}", summaries(&r, "acme"));
    assert_eq!(apply(&cx, &nodes).changed, 0);
    assert_eq!(fs::read(&file).unwrap(), bundle);

    let (names, not_after, issuer) = states::kinds::certificate::expiry(&file).unwrap();
    assert_eq!(names, ["app.example.test", "other.example.test"]);
    assert_eq!(issuer, "CN=Test Intermediate");
    assert!(not_after > now + 59 * DAY && not_after < now + 61 * DAY);
    assert!(states::kinds::certificate::expiry(&root.path().join("nope")).is_none());

    // A wildcard covers one label, no more, no less.
    let wild = x509::inspect(&ca_signed(&["*.example.test"], now - DAY, now + DAY)).unwrap();
    let wanted: Vec<String> = ["app.example.test", "example.test", "a.b.example.test"].map(String::from).into();
    assert_eq!(wild.uncovered(&wanted), ["example.test", "a.b.example.test"]);
}

#[test]
fn acme_plans_obtain_nothing_or_renew() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let nodes = support::nodes(&cx, &role_acme(r#"["app.example.test"]"#, "renew_days = 20\n"), &[]).unwrap();
    let file = root.path().join(CERT.trim_start_matches('/'));
    let obtain = "obtain certificate from https://acme.test/dir for app.example.test";

    // Fresh node: self-signed first, then ACME wants a real one.
    let r = check(&cx, &nodes);
    assert_eq!(summaries(&r, "acme"), [format!("{obtain} (there is none)")]);
    let r = run(&cx, &nodes[..1], states::engine::report::Mode::Apply, &Recorder::default());
    assert_eq!(r.changed, 1);
    assert_eq!(summaries(&check(&cx, &nodes), "acme"), [format!("{obtain} (the current one is self-signed)")]);

    let now = SystemTime::now();
    let put = |b: &[u8]| fs::write(&file, b).unwrap();
    put(&ca_signed(&["app.example.test"], now - DAY, now + 89 * DAY));
    assert_eq!(check(&cx, &nodes).pending, 0);

    put(&ca_signed(&["app.example.test"], now - 80 * DAY, now + 10 * DAY + Duration::from_secs(60)));
    let r = check(&cx, &nodes);
    assert_eq!(
        summaries(&r, "acme"),
        ["renew certificate from https://acme.test/dir for app.example.test (expires in 10 days)"]
    );
    assert_eq!(summaries(&r, "cert"), Vec::<String>::new(), "the certificate state leaves it alone");

    put(&ca_signed(&["www.example.test"], now - DAY, now + 89 * DAY));
    assert_eq!(summaries(&check(&cx, &nodes), "acme"), [format!("{obtain} (it does not cover app.example.test)")]);

    // Obtained by this state from another directory (staging, say): replaced.
    let bundle = ca_signed(&["app.example.test"], now - DAY, now + 89 * DAY);
    put(&bundle);
    let record = root.path().join("var/lib/bootstrap/acme/etc_haproxy_certs_site.pem.json");
    let mut rec = Record::default();
    rec.succeeded(states::kinds::acme::backoff::Issued {
        directory: "https://staging.test/dir".into(),
        fingerprint: x509::inspect(&bundle).unwrap().fingerprint,
    });
    rec.save(&record).unwrap();
    assert_eq!(
        summaries(&check(&cx, &nodes), "acme"),
        [format!("{obtain} (the current one is from https://staging.test/dir)")]
    );
}

#[test]
fn backoff_schedule() {
    let m = |s: u64| Duration::from_secs(s * 60);
    let got: Vec<Duration> = (0..10).map(delay).collect();
    assert_eq!(got, [m(0), m(0), m(5), m(10), m(20), m(40), m(80), m(160), m(320), m(360)]);
    assert_eq!(delay(u32::MAX), m(360));
}

#[test]
fn failed_issuance_keeps_the_certificate_and_backs_off() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    // Nothing listens there: the issuance fails fast, as with a CA that is down.
    let role = role_acme(r#"["app.example.test"]"#, "challenge_port = 0\nemail = \"ops@example.test\"\n")
        .replace("https://acme.test/dir", "https://127.0.0.1:9/dir");
    let nodes = support::nodes(&cx, &role, &[]).unwrap();
    let file = root.path().join(CERT.trim_start_matches('/'));
    let record = root.path().join("var/lib/bootstrap/acme/etc_haproxy_certs_site.pem.json");

    let r = apply(&cx, &nodes);
    assert_eq!(status_of(&r, "cert"), Status::Changed);
    assert_eq!(status_of(&r, "acme"), Status::Failed);
    let err = r.states[1].error.clone().unwrap();
    assert!(err.contains("ACME issuance from https://127.0.0.1:9/dir failed (attempt 1; the next run retries); the current certificate stays"), "{err}");
    let self_signed = fs::read(&file).unwrap();
    assert!(x509::inspect(&self_signed).unwrap().self_signed);
    let key = root.path().join("var/lib/bootstrap/acme/account-key.pem");
    assert_eq!((mode(&key), mode(key.parent().unwrap()), mode(&record)), (0o600, 0o700, 0o600));
    let account = fs::read(&key).unwrap();

    // The first failure is retried by the next run; the second one backs off 5 minutes.
    assert_eq!(check(&cx, &nodes).pending, 1);
    let r = apply(&cx, &nodes);
    let err = r.states[1].error.clone().unwrap();
    assert!(err.contains("(attempt 2; retry after "), "{err}");
    assert_eq!(fs::read(&file).unwrap(), self_signed, "a failed issuance writes nothing");
    assert_eq!(fs::read(&key).unwrap(), account, "the account key is reused");
    let rec = Record::load(&record);
    assert_eq!(rec.failures, 2);
    assert!(!rec.last_error.is_empty());
    assert_eq!(check(&cx, &nodes).pending, 0, "backing off: nothing to do");
    assert_eq!(apply(&cx, &nodes).failed, 0);

    // Once the wait is over it tries again; other names are a new attempt, tried at once.
    let mut past = rec.clone();
    past.last_failure -= 301;
    past.save(&record).unwrap();
    assert_eq!(check(&cx, &nodes).pending, 1);
    rec.save(&record).unwrap();
    let other = support::nodes(&cx, &role.replace("app.example.test", "api.example.test"), &[]).unwrap();
    assert_eq!(summaries(&check(&cx, &other), "acme").len(), 1);
}

#[test]
fn responder_answers_only_known_tokens() {
    let r = Responder::start(0).unwrap();
    r.answer("tok1", "tok1.thumbprint");
    let get = |path: &str| {
        let mut c = TcpStream::connect(r.addr()).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: app.example.test\r\n\r\n").unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    };
    let ok = get("/.well-known/acme-challenge/tok1");
    assert!(ok.starts_with("HTTP/1.1 200 OK") && ok.ends_with("\r\n\r\ntok1.thumbprint"), "{ok}");
    assert!(get("/.well-known/acme-challenge/other").starts_with("HTTP/1.1 404"));
    assert!(get("/").starts_with("HTTP/1.1 404"));
    let addr = r.addr();
    drop(r);
    assert!(TcpStream::connect(addr).is_err(), "nothing listens after the issuance");
}
