//! Bad roles give clear errors naming file, line and key, before anything runs.

mod support;

use support::*;

fn error(role: &str, templates: &[(&str, &str)]) -> String {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    match nodes(&cx, role, templates) {
        Ok(_) => panic!("role was accepted:\n{role}"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn malformed_toml_names_the_line() {
    let e = error("[[state]]\nid = \"a\"\ntype = \"file\"\npath = /etc/x\n", &[]);
    assert!(e.contains("test.toml") && e.contains("line 4"), "{e}");
}

#[test]
fn unknown_type_and_unknown_key() {
    let e = error("[[state]]\nid = \"a\"\ntype = \"fiel\"\npath = \"/x\"\n", &[]);
    assert!(e.contains("unknown state type `fiel`") && e.contains("line 1"), "{e}");
    let e = error("\n[[state]]\nid = \"a\"\ntype = \"file\"\npath = \"/x\"\ncontent = \"\"\nmdoe = \"0644\"\n", &[]);
    assert!(e.contains("unknown field `mdoe`") && e.contains("line 7") && e.contains("state `a`"), "{e}");
}

#[test]
fn bad_values() {
    let e = error("[[state]]\nid = \"a\"\ntype = \"file\"\npath = \"/x\"\ncontent = \"\"\nmode = \"999\"\n", &[]);
    assert!(e.contains("mode `999`") && e.contains("line 6"), "{e}");
    let e = error("[[state]]\nid = \"a\"\ntype = \"file\"\npath = \"relative\"\ncontent = \"\"\n", &[]);
    assert!(e.contains("must be absolute") && e.contains("line 4"), "{e}");
    let e = error("[[state]]\nid = \"a\"\ntype = \"file\"\npath = \"/x\"\n", &[]);
    assert!(e.contains("exactly one of `content`, `template` or `source`"), "{e}");
    let e =
        error("[[state]]\nid = \"a\"\ntype = \"file\"\npath = \"/x\"\ncontent = \"\"\nnotify = [\"bounce x\"]\n", &[]);
    assert!(e.contains("unknown action `bounce`") && e.contains("line 6"), "{e}");
    let e = error("[[state]]\ntype = \"file\"\n", &[]);
    assert!(e.contains("a state needs `id`"), "{e}");
}

#[test]
fn unknown_requires_and_cycles() {
    let e = error("[[state]]\nid = \"a\"\ntype = \"directory\"\npath = \"/a\"\nrequires = [\"nope\"]\n", &[]);
    assert!(e.contains("`a` requires `nope`"), "{e}");
    let e = error(
        "[[state]]\nid = \"a\"\ntype = \"directory\"\npath = \"/a\"\nrequires = [\"b\"]\n\
         [[state]]\nid = \"b\"\ntype = \"directory\"\npath = \"/b\"\nrequires = [\"a\"]\n",
        &[],
    );
    assert!(e.contains("cycle: a -> b -> a"), "{e}");
    let e = error("[[state]]\nid = \"a\"\ntype = \"directory\"\npath = \"/a\"\n[[state]]\nid = \"a\"\ntype = \"directory\"\npath = \"/b\"\n", &[]);
    assert!(e.contains("`a` is already defined") && e.contains("line 5"), "{e}");
}

#[test]
fn template_errors_name_template_and_line() {
    let role = "[[state]]\nid = \"t\"\ntype = \"file\"\npath = \"/t\"\ntemplate = \"t.hbs\"\n";
    let e = error(role, &[("t.hbs", "line one\n{{settings.missing}}\n")]);
    assert!(e.contains("t.hbs") && e.contains("line 2") && e.contains("missing"), "{e}");
    let e = error(role, &[("t.hbs", "{{#if x}}\nunclosed\n")]);
    assert!(e.contains("t.hbs"), "{e}");
    let e = error("[[state]]\nid = \"t\"\ntype = \"file\"\npath = \"/t\"\ntemplate = \"nope.hbs\"\n", &[]);
    assert!(e.contains("template `nope.hbs` not found"), "{e}");
}

#[test]
fn every_bad_state_is_reported_at_once() {
    let e = error(
        "[[state]]\nid = \"a\"\ntype = \"file\"\npath = \"x\"\ncontent = \"\"\n\
         [[state]]\nid = \"b\"\ntype = \"nope\"\n",
        &[],
    );
    assert!(e.contains("state `a`") && e.contains("state `b`"), "{e}");
}

#[test]
fn parameters_take_settings() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let role = "[[state]]\nid = \"p\"\ntype = \"file\"\npath = \"/srv/{{settings.greeting}}.txt\"\ncontent = \"x\"\n";
    let built = nodes(&cx, role, &[]).unwrap();
    assert_eq!(built[0].state.target(), "/srv/hello.txt");
    let e = error("[[state]]\nid = \"p\"\ntype = \"file\"\npath = \"/srv/{{settings.nope}}\"\ncontent = \"x\"\n", &[]);
    assert!(e.contains("`path`") && e.contains("nope") && e.contains("line 4"), "{e}");
    // An unset setting leaves the parameter out: here a required one, so the module says so.
    let e = error("[[state]]\nid = \"p\"\ntype = \"file\"\npath = { setting = \"missing\" }\ncontent = \"x\"\n", &[]);
    assert!(e.contains("missing field `path`"), "{e}");
    let with_secret = cx_with_secrets(root.path(), &[("pw", "canary-param-secret")]);
    let role = "[[state]]\nid = \"p\"\ntype = \"file\"\npath = \"/srv/{{secret \\\"pw\\\"}}\"\ncontent = \"x\"\n";
    let e = format!("{:#}", nodes(&with_secret, role, &[]).err().expect("a secret in a parameter was accepted"));
    assert!(e.contains("can't use a secret") && !e.contains("canary-param-secret"), "{e}");
}

#[test]
fn when_leaves_states_out() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    let role = r#"
[[state]]
id = "acme"
type = "directory"
path = "/acme"
when = "{{settings.domain}}"

[[state]]
id = "greeted"
type = "directory"
path = "/greeted"
when = { setting = "greeting" }

[[state]]
id = "after"
type = "directory"
path = "/after"
requires = ["acme", "greeted"]
"#;
    let built = nodes(&cx, role, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let ids: Vec<&str> = built.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["greeted", "after"]);
    assert_eq!(built[1].requires, ["greeted"]);
    let e = error("[[state]]\nid = \"a\"\ntype = \"directory\"\npath = \"/a\"\nwhen = \"{{settings.typo}}\"\n", &[]);
    assert!(e.contains("`when`") && e.contains("typo") && e.contains("line 5"), "{e}");
}

#[test]
fn list_items_that_render_empty_are_left_out() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    // `validate` is a list: the empty item (no domain set) goes, the data path fills one in.
    let role = r#"
[[state]]
id = "v"
type = "file"
path = "/v"
content = "x"
validate = ["sh", "-c", "[ \"$0\" = greeted ]", "{{settings.domain}}", "{{#if settings.greeting}}greeted{{/if}}", "{}"]
"#;
    let built = nodes(&cx, role, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    // The validator passes only if the empty item was dropped, so `greeted` is its $0.
    let r = apply(&cx, &built);
    assert_eq!(r.changed, 1, "{:?}", r.states[0].error);
    let with_data = "[[state]]\nid = \"v\"\ntype = \"file\"\npath = { data = \"facts.hostname\" }\ncontent = \"x\"\n";
    let e = error(with_data, &[]);
    assert!(e.contains("must be absolute, not `node1`"), "the data path was not filled in: {e}");
    let e = error("[[state]]\nid = \"v\"\ntype = \"file\"\npath = { data = \"nope.x\" }\ncontent = \"x\"\n", &[]);
    assert!(e.contains("template data `nope.x` is not set"), "{e}");
}

#[test]
fn a_parameter_templated_from_an_unset_setting_is_absent() {
    let root = tempfile::tempdir().unwrap();
    let cx = cx(root.path());
    // `owner = ""` would be an unknown user; left out, the file keeps the creating user's.
    let role =
        "[[state]]\nid = \"o\"\ntype = \"file\"\npath = \"/o\"\ncontent = \"x\"\nowner = \"{{settings.domain}}\"\n";
    let built = nodes(&cx, role, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let r = apply(&cx, &built);
    assert_eq!(r.changed, 1, "{:?}", r.states[0].error);
}
