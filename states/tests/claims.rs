//! Two states owning one thing would undo each other on every run: the compiler refuses
//! them before anything runs, naming both states and their lines. A pair that shares a thing
//! by design (a self-signed certificate until ACME replaces it) says so on both sides.

mod support;

use support::*;

fn state(id: &str, body: &str) -> String {
    format!("[[state]]\nid = \"{id}\"\n{body}\n")
}

fn refused(role: &str) -> String {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let e = format!("{:#}", nodes(&cx, role, &[]).err().unwrap_or_else(|| panic!("accepted:\n{role}")));
    assert!(std::fs::read_dir(root.path()).unwrap().next().is_none(), "a refused role changed the tree");
    e
}

#[test]
fn two_files_on_one_path_are_refused_with_both_ids_and_lines() {
    let role = state("motd", "type = \"file\"\npath = \"/etc/motd\"\ncontent = \"a\"")
        + &state("banner", "type = \"file\"\npath = \"/etc/motd\"\ncontent = \"b\"");
    let e = refused(&role);
    assert!(e.contains("test.toml, line 6: state `banner` (file) manages path /etc/motd"), "{e}");
    assert!(e.contains("which state `motd` (file) at ") && e.contains("test.toml, line 1"), "{e}");
}

#[test]
fn a_file_and_a_cron_entry_on_one_path_are_refused() {
    let role = state("job", "type = \"cron\"\nname = \"job\"\nschedule = \"* * * * *\"\ncommand = \"true\"")
        + &state("job-file", "type = \"file\"\npath = \"/etc/cron.d/job\"\ncontent = \"x\"");
    let e = refused(&role);
    assert!(e.contains("state `job-file` (file) manages path /etc/cron.d/job, which state `job` (cron)"), "{e}");
}

#[test]
fn two_services_on_one_unit_are_refused() {
    let role = state("a", "type = \"service\"\nname = \"cron\"\nrunning = true")
        + &state("b", "type = \"service\"\nname = \"cron.service\"\nenabled = true");
    let e = refused(&role);
    assert!(e.contains("state `b` (service) manages unit cron.service, which state `a` (service)"), "{e}");
}

#[test]
fn a_directory_and_an_absent_on_one_path_are_refused() {
    let role =
        state("d", "type = \"directory\"\npath = \"/srv/x\"") + &state("gone", "type = \"absent\"\npath = \"/srv/x/\"");
    let e = refused(&role);
    assert!(e.contains("state `gone` (absent) manages path /srv/x, which state `d` (directory)"), "{e}");
}

#[test]
fn certificate_and_acme_share_their_file_by_declaration_and_a_file_may_not() {
    let cert =
        state("tls-self", "type = \"certificate\"\npath = \"/etc/haproxy/certs/site.pem\"\nnames = [\"a.test\"]");
    let acme = state(
        "tls-acme",
        "type = \"acme\"\npath = \"/etc/haproxy/certs/site.pem\"\nnames = [\"a.test\"]\ndirectory = \"https://ca.test/dir\"",
    );
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    assert!(nodes(&cx, &(cert.clone() + &acme), &[]).is_ok(), "the declared pair is refused");
    let file = state("pem", "type = \"file\"\npath = \"/etc/haproxy/certs/site.pem\"\ncontent = \"x\"");
    let e = refused(&(cert + &file));
    assert!(
        e.contains("state `pem` (file) manages path /etc/haproxy/certs/site.pem, which state `tls-self` (certificate)"),
        "{e}"
    );
}
