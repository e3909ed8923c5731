//! What a user sees for bad input: file, line, column, the line, a caret, the element path and
//! a hint; every problem at once. Snapshots in tests/snapshots/.

use std::path::Path;

use pvlaunch::profile::diag::{Source, render_all};
use pvlaunch::profile::parse::parse_source;

fn render(name: &str) -> (String, usize) {
    let rel = format!("tests/fixtures/invalid/{name}");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(&rel)).unwrap();
    let report = parse_source(Source::new(rel, text));
    let servers = report.servers.len();
    (render_all(&report.diagnostics), servers)
}

#[test]
fn malformed_xml_names_line_and_column() {
    let (out, servers) = render("malformed.pvsc");
    assert_eq!(servers, 0);
    insta::assert_snapshot!(out);
}

#[test]
fn unknown_pvlaunch_parts_are_errors_with_suggestions() {
    let (out, servers) = render("pvlaunch-unknown.pvsc");
    assert_eq!(servers, 0, "a server with errors is not usable");
    insta::assert_snapshot!(out);
}

#[test]
fn hostile_values_are_refused_before_they_reach_a_command_line() {
    let (out, _) = render("pvlaunch-hostile.pvsc");
    insta::assert_snapshot!(out);
}

#[test]
fn paraview_unknown_parts_are_warnings() {
    let (out, servers) = render("paraview-warnings.pvsc");
    assert_eq!(servers, 1, "warnings do not make a server unusable");
    assert!(!out.contains("error:"), "{out}");
    insta::assert_snapshot!(out);
}

#[test]
fn structural_errors_are_all_reported_and_good_servers_survive() {
    let (out, servers) = render("structure.pvsc");
    assert_eq!(servers, 1);
    insta::assert_snapshot!(out);
}

#[test]
fn wrong_root_and_unknown_entities() {
    insta::assert_snapshot!(render("wrong-root.pvsc").0);
    insta::assert_snapshot!(render("entity.pvsc").0);
}

/// `delay`, `process_wait` and `timeout` are read by one checked rule: a finite number of
/// seconds from 0 to 3600 (`delay` may also be -1: wait for the command to end). Anything else
/// used to pass and then panic when `connect` made a duration of it.
#[test]
fn command_numbers_outside_their_rule_are_positioned_errors() {
    let rel = "tests/fixtures/invalid/command-numbers.pvsc";
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap();
    let report = parse_source(Source::new(rel, text));
    let names: Vec<&str> = report.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["fine"]);
    let cmd = report.servers[0].command().unwrap();
    assert_eq!((cmd.delay, cmd.process_wait), (-1.0, 2.5));
    let invalid: Vec<&str> = report.invalid.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(invalid, ["nan", "inf", "negative", "huge", "words"]);
    assert_eq!(report.error_count(), 7);
    insta::assert_snapshot!(render_all(&report.diagnostics));
}
