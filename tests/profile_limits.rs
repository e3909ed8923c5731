//! Hostile sizes: long names, doubling `<Set>` chains, files with thousands of attributes or
//! servers. Each must end in bounded output and a clear error, never a panic, gigabytes of
//! memory or quadratic work. Output size and shape are asserted, not wall time.

use std::process::{Command, Output};

use pvlaunch::commands::{self, PrepareError, prepare};
use pvlaunch::profile::diag::{EXCERPT_CHARS, PRINT_LIMIT, Source};
use pvlaunch::profile::parse::parse_source;
use pvlaunch::profile::resolve::{Context, Strictness};

fn pvlaunch(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pvlaunch"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join(".config"))
        .env("PVLAUNCH_PARAVIEW_VERSION", "5.11.0")
        .output()
        .unwrap()
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

fn write(dir: &std::path::Path, name: &str, body: &str) -> String {
    std::fs::write(dir.join(name), body).unwrap();
    name.to_string()
}

const PVLAUNCH: &str =
    r#"<PVLaunch version="1"><Login host="login"/><Job scheduler="slurm"/></PVLaunch>"#;

/// `show` padded option and variable names with `{:width$}`: a name longer than 65,535
/// characters made the formatter panic.
#[test]
fn show_survives_names_longer_than_a_format_width() {
    let dir = tempfile::tempdir().unwrap();
    let long = "N".repeat(70_000);
    let body = format!(
        r#"<Servers><Server name="s" resource="csrc://localhost:11111"><CommandStartup><Options>
        <Option name="{long}"><String default="x"/></Option>
        <Set name="S{long}" value="y"/>
        </Options><Command exec="run"/></CommandStartup></Server>
        <Server name="{long}" resource="cs://{long}:1"><ManualStartup/></Server></Servers>"#
    );
    let f = write(dir.path(), "long.pvsc", &body);
    for args in [
        &["-f", &f, "show", "s"][..],
        &["-f", &f, "show", &long],
        &["-f", &f, "list"],
    ] {
        let out = pvlaunch(dir.path(), args);
        let err = text(&out.stderr);
        assert!(!err.contains("panicked"), "{}: {err}", args[2]);
        assert_eq!(out.status.code(), Some(0), "{}: {err}", args[2]);
        assert!(text(&out.stdout).contains(&long));
    }
}

/// Each value is the previous one twice: 1.4 KB of `<Set>`s make a 2 GB command line.
fn doubling_chain(steps: usize) -> String {
    let mut sets = String::from(r#"<Set name="A0" value="xxxxxxxx"/>"#);
    for i in 1..=steps {
        sets.push_str(&format!(
            r#"<Set name="A{i}" value="$A{p}$$A{p}$"/>"#,
            p = i - 1
        ));
    }
    format!(
        r#"<Servers><Server name="chain" resource="csrc://localhost:11111"><CommandStartup><Options>{sets}</Options>
<Command exec="echo"><Arguments><Argument value="$A{steps}$"/></Arguments></Command></CommandStartup>
<PVLaunch version="1"><Login host="login"/><Job scheduler="slurm"/></PVLaunch></Server></Servers>"#
    )
}

#[test]
fn a_doubling_set_chain_is_a_positioned_error_in_validate_show_and_connect() {
    let dir = tempfile::tempdir().unwrap();
    let body = doubling_chain(28);
    assert!(body.len() < 2_000, "{}", body.len());
    let f = write(dir.path(), "chain.pvsc", &body);

    let validate = pvlaunch(dir.path(), &["validate", &f]);
    let out = text(&validate.stdout);
    assert_eq!(validate.status.code(), Some(3), "{out}");
    assert!(out.contains("chain.pvsc:2:1"), "{out}");
    assert!(out.contains("longer than 65536 bytes"), "{out}");
    assert!(out.contains("INVALID: chain.pvsc"), "{out}");

    for args in [
        &["-f", &f, "show", "chain"][..],
        &["-f", &f, "connect", "chain", "--dry-run", "--client=wait"],
    ] {
        let o = pvlaunch(dir.path(), args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{}: {err}", args[2]);
        assert!(err.contains("chain.pvsc:2:1"), "{err}");
        assert!(err.contains("longer than 65536 bytes"), "{err}");
        assert!(o.stdout.len() + o.stderr.len() < 10_000);
    }
}

/// pvlaunch's own values are substituted once (no rescanning), but repeating a long value still
/// grows them: the same 64 KiB cap, at the value's place.
#[test]
fn a_long_value_in_pvlaunch_settings_is_refused_at_its_place() {
    let long = "y".repeat(40_000);
    let body = format!(
        r#"<Servers><Server name="s" resource="csrc://localhost:11111"><CommandStartup><Options><Set name="B" value="{long}"/></Options>
<Command exec="echo"/></CommandStartup>
<PVLaunch version="1"><Login host="login"/><Job scheduler="slurm"><Setup line="$B$ $B$"/></Job></PVLaunch></Server></Servers>"#
    );
    let report = parse_source(Source::new("long.pvsc", body));
    assert!(!report.has_errors(), "{}", report.rendered_errors());
    let (server, source) = (&report.servers[0], &report.source);
    let mut ctx = Context::fixed("5.11.0", 0.5);
    match prepare(server, source, &[], &mut ctx, Strictness::default()) {
        Err(PrepareError::Profile(d)) => {
            assert_eq!(d.len(), 1, "{d:?}");
            assert!(d[0].message.contains("longer than"), "{}", d[0].message);
            assert!(
                d[0].path.ends_with("PVLaunch/Job/Setup@line"),
                "{}",
                d[0].path
            );
            assert_eq!(d[0].location.line, 3);
        }
        other => panic!("{other:?}"),
    }
}

/// A 49 KB file with 5,000 unknown attributes on one line printed 366 MB of diagnostics:
/// each one copied the whole line.
#[test]
fn thousands_of_attributes_on_one_line_print_a_bounded_report() {
    let attrs: String = (0..5_000).map(|i| format!(" x{i:04}=\"1\"")).collect();
    let body = format!(
        "<Servers><Server name=\"s\" resource=\"csrc://localhost\"{attrs}><ManualStartup/></Server></Servers>"
    );
    assert!(body.len() < 60_000);
    let report = parse_source(Source::new("wide.pvsc", body.clone()));
    assert_eq!(report.warning_count(), 5_000);
    assert_eq!(report.servers.len(), 1);
    for d in &report.diagnostics {
        assert!(
            d.line_text.chars().count() <= EXCERPT_CHARS + 2,
            "{}",
            d.line_text
        );
        assert_eq!(
            d.line_text.chars().nth(d.caret),
            Some('x'),
            "{}",
            d.line_text
        );
    }
    let rendered = report.rendered();
    assert_eq!(rendered.matches("warning:").count(), PRINT_LIMIT);
    assert!(rendered.ends_with(&format!("... and {} more\n", 5_000 - PRINT_LIMIT)));
    assert!(rendered.len() < 30_000, "{}", rendered.len());

    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "wide.pvsc", &body);
    let out = pvlaunch(dir.path(), &["validate", &f]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.len() < 30_000, "{}", out.stdout.len());
    let json = pvlaunch(dir.path(), &["validate", "--json", &f]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc[0]["warnings"], 5_000);
    let kept = doc[0]["diagnostics"].as_array().unwrap().len();
    assert_eq!(doc[0]["omitted"].as_u64().unwrap() as usize, 5_000 - kept);
}

/// 20,000 attributes took 10 s and 4 GB (quadratic offsets and duplicate checks); and an
/// attribute repeated after thousands of others is still found.
#[test]
fn twenty_thousand_attributes_are_read_in_one_pass() {
    let attrs: String = (0..20_000).map(|i| format!(" a{i}=\"{i}\"")).collect();
    let body = format!(
        "<Servers><Server name=\"s\" resource=\"csrc://localhost\"{attrs}><ManualStartup/></Server></Servers>"
    );
    let report = parse_source(Source::new("wide.pvsc", body));
    assert_eq!(report.warning_count(), 20_000);
    assert!(report.diagnostics.len() <= pvlaunch::profile::diag::KEEP_PER_FILE);
    let last = report.diagnostics.last().unwrap();
    assert_eq!(last.location.line, 1);

    let dup = format!(
        "<Servers><Server{attrs} a5=\"again\" name=\"s\"><ManualStartup/></Server></Servers>"
    );
    let report = parse_source(Source::new("dup.pvsc", dup.clone()));
    assert_eq!(report.error_count(), 1);
    let d = &report.diagnostics[0];
    assert!(
        d.message.contains("duplicated attribute `a5`"),
        "{}",
        d.message
    );
    assert_eq!(d.location.column, dup.find(" a5=\"again\"").unwrap() + 2);
}

/// 16,000 servers took 73 s: every server's position was found by scanning from the start.
#[test]
fn sixteen_thousand_servers_parse_and_their_duplicates_are_counted() {
    let mut body = String::from("<Servers>\n");
    for i in 0..16_000 {
        let name = if i % 2 == 0 {
            format!("s{i}")
        } else {
            "twin".into()
        };
        body.push_str(&format!(
            "  <Server name=\"{name}\" resource=\"cs://h:{}\"><ManualStartup/></Server>\n",
            1 + i % 60_000
        ));
    }
    body.push_str("</Servers>\n");
    let report = parse_source(Source::new("many.pvsc", body));
    assert_eq!(report.servers.len(), 16_000);
    assert_eq!(report.error_count(), 0);
    assert_eq!(report.warning_count(), 7_999, "one per later `twin`");
    let d = &report.diagnostics[0];
    assert!(d.message.contains("first on line 3"), "{}", d.message);
    assert_eq!(d.location.line, 5);
    let mut checked = report;
    commands::check_report(&mut checked, |_| Context::fixed("5.11.0", 0.5));
    assert_eq!(checked.servers.len(), 16_000);
}

/// Huge names do not make each diagnostic huge either.
#[test]
fn diagnostics_quoting_long_names_stay_small() {
    let long = "n".repeat(100_000);
    let options: String = (0..200)
        .map(|_| format!(r#"<Option name="{long}"/>"#))
        .collect();
    let body = format!(
        r#"<Servers><Server name="{long}" resource="csrc://localhost"><CommandStartup><Options>{options}</Options><Command exec="x"/></CommandStartup>{PVLAUNCH}</Server></Servers>"#
    );
    let report = parse_source(Source::new("names.pvsc", body));
    assert_eq!(report.warning_count(), 200);
    let rendered = report.rendered();
    assert!(rendered.len() < 60_000, "{}", rendered.len());
}
