//! ParaView's option semantics, quirk by quirk, on small inline profiles.

use std::collections::BTreeMap;

use pvlaunch::profile::diag::Source;
use pvlaunch::profile::model::Server;
use pvlaunch::profile::parse::parse_source;
use pvlaunch::profile::resolve::{self, Context, Origin, ResolveError, Resolved, Strictness};

fn ctx(noise: f64) -> Context {
    Context {
        environment: BTreeMap::from([("HOME".to_string(), "/home/u".to_string())]),
        application_dir: "/usr/bin".into(),
        find_program: Box::new(|name| (name == "ssh").then(|| "/usr/bin/ssh".to_string())),
        ..Context::fixed("5.11.0", noise)
    }
}

fn server(xml: &str) -> Server {
    let report = parse_source(Source::new("test.pvsc", xml));
    let errors = report.rendered_errors();
    assert!(errors.is_empty(), "{errors}");
    report.servers.into_iter().next().expect("one server")
}

fn with_options(options: &str, args: &str) -> Server {
    server(&format!(
        r#"<Servers><Server name="s" resource="csrc://localhost:11111"><CommandStartup>
        <Options>{options}</Options>
        <Command exec="run" process_wait="3" delay="5"><Arguments>{args}</Arguments></Command>
        </CommandStartup></Server></Servers>"#
    ))
}

fn resolve(s: &Server, sets: &[&str]) -> Result<Resolved, Vec<ResolveError>> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    resolve::resolve(s, &sets, &mut ctx(0.5), Strictness::default())
}

fn argv(s: &Server, sets: &[&str]) -> Vec<String> {
    resolve(s, sets).unwrap().command.unwrap().argv
}

fn opt(r: &Resolved, name: &str) -> (String, Origin) {
    let o = r.options.iter().find(|o| o.name == name).unwrap();
    (o.value.clone(), o.origin)
}

#[test]
fn range_without_default_takes_min_and_defaults_are_clamped() {
    let s = with_options(
        r#"<Option name="A"><Range type="int" min="3" max="9"/></Option>
           <Option name="B"><Range type="int" min="1" max="4" default="10"/></Option>
           <Option name="C"><Range type="double" min="0" max="1" default="0.125"/></Option>
           <Option name="D"><Range type="int" min="5" max="9" default="abc"/></Option>"#,
        r#"<Argument value="$A$"/><Argument value="$B$"/><Argument value="$C$"/><Argument value="$D$"/>"#,
    );
    let r = resolve(&s, &[]).unwrap();
    assert_eq!(opt(&r, "A"), ("3".into(), Origin::Fallback));
    assert_eq!(opt(&r, "B"), ("4".into(), Origin::Default));
    // QDoubleSpinBox keeps two decimals.
    assert_eq!(opt(&r, "C").0, "0.13");
    assert_eq!(opt(&r, "D"), ("5".into(), Origin::Fallback));
    assert_eq!(argv(&s, &[]), vec!["run", "3", "4", "0.13", "5"]);
}

#[test]
fn random_uses_min_plus_span_times_noise() {
    let s = with_options(
        r#"<Option name="PORT"><Range type="int" min="1000" max="2000" default="random"/></Option>"#,
        r#"<Argument value="$PORT$"/>"#,
    );
    let r = resolve::resolve(&s, &[], &mut ctx(0.25), Strictness::default()).unwrap();
    assert_eq!(opt(&r, "PORT"), ("1250".into(), Origin::Random));
}

#[test]
fn enumeration_default_is_matched_against_values_not_labels() {
    let s = with_options(
        r#"<Option name="Q"><Enumeration default="Normal queue">
             <Entry value="normal" label="Normal queue"/><Entry value="debug"/></Enumeration></Option>
           <Option name="R"><Enumeration default="debug">
             <Entry value="normal"/><Entry value="debug"/></Enumeration></Option>
           <Option name="N"><Enumeration><Entry value="normal"/></Enumeration></Option>"#,
        r#"<Argument value="[$Q$]"/><Argument value="$R$"/><Argument value="[$N$]"/>"#,
    );
    let r = resolve(&s, &[]).unwrap();
    assert_eq!(opt(&r, "Q"), (String::new(), Origin::Fallback));
    assert_eq!(opt(&r, "R"), ("debug".into(), Origin::Default));
    assert_eq!(argv(&s, &[]), vec!["run", "[]", "debug", "[]"]);
    assert_eq!(
        argv(&s, &["Q=debug"]),
        vec!["run", "[debug]", "debug", "[]"]
    );
}

#[test]
fn boolean_is_checked_only_when_default_equals_its_true_string() {
    let s = with_options(
        r#"<Option name="A"><Boolean true="--on" false="--off" default="--on"/></Option>
           <Option name="B"><Boolean true="--on" false="--off" default="true"/></Option>
           <Option name="C"><Boolean/></Option>"#,
        r#"<Argument value="$A$"/><Argument value="$B$"/><Argument value="$C$"/>"#,
    );
    assert_eq!(argv(&s, &[]), vec!["run", "--on", "--off", "0"]);
    assert_eq!(
        argv(&s, &["B=--on", "C=true"]),
        vec!["run", "--on", "--on", "1"]
    );
}

#[test]
fn strings_files_and_passwords() {
    let s = with_options(
        r#"<Option name="S"><String default="a b"/></Option>
           <Option name="E"><String/></Option>
           <Option name="F"><File default="/data/x.vtu"/></Option>
           <Option name="P"><Password/></Option>"#,
        r#"<Argument value="$S$"/><Argument value="-e"/><Argument value="$E$"/><Argument value="$F$"/><Argument value="$P$"/>"#,
    );
    // "a b" is substituted after assembly: the space splits it; the empty value vanishes.
    assert_eq!(argv(&s, &[]), vec!["run", "a", "b", "-e", "/data/x.vtu"]);
    assert_eq!(
        argv(&s, &["P=secret"]),
        vec!["run", "a", "b", "-e", "/data/x.vtu", "secret"]
    );
}

#[test]
fn set_values_are_checked_against_the_type() {
    let s = with_options(
        r#"<Option name="N"><Range type="int" min="1" max="8"/></Option>
           <Option name="X"><Range type="double" min="0" max="1"/></Option>
           <Option name="Q"><Enumeration default="a"><Entry value="a"/><Entry value="b" label="Bee"/></Enumeration></Option>
           <Option name="ID" readonly="true"><Range type="int" min="1" max="9" default="3"/></Option>"#,
        r#"<Argument value="$N$"/>"#,
    );
    let errors = resolve(&s, &["N=9", "X=abc", "Q=c", "ID=4", "NN=1", "junk"]).unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        vec![
            "`junk` is not OPTION=VALUE",
            "`9` is not a valid value for option `N` (int range): allowed a whole number from 1 to 8",
            "`abc` is not a valid value for option `X` (double range): allowed a number from 0 to 1",
            "`c` is not a valid value for option `Q` (enumeration): allowed `a`, `b` (Bee)",
            "option `ID` is read-only",
            "server `s` has no option `NN` (did you mean `N`?)",
        ]
    );
    assert_eq!(argv(&s, &["N=2", "X=0.5", "Q=b"]), vec!["run", "2"]);
}

#[test]
fn switch_applies_after_options_and_only_when_an_option_exists() {
    let s = with_options(
        r#"<Option name="OS"><Enumeration default="lin"><Entry value="lin"/><Entry value="win"/></Enumeration></Option>
           <Switch name="OS"><Case value="lin"><Set name="SH" value="bash"/></Case>
             <Case value="win"><Set name="SH" value="cmd"/></Case></Switch>
           <Switch name="PV_CLIENT_PLATFORM"><Case value="Linux"><Set name="T" value="xterm"/></Case></Switch>"#,
        r#"<Argument value="$SH$"/><Argument value="$T$"/>"#,
    );
    assert_eq!(argv(&s, &[]), vec!["run", "bash", "xterm"]);
    assert_eq!(argv(&s, &["OS=win"]), vec!["run", "cmd", "xterm"]);
    // Without any Option, ParaView never evaluates the Switch: `$T$` stays the bare name.
    let s = server(
        r#"<Servers><Server name="s" resource="csrc://"><CommandStartup><Options>
           <Switch name="PV_CLIENT_PLATFORM"><Case value="Linux"><Set name="T" value="xterm"/></Case></Switch>
           <Set name="U" value="u1"/></Options>
           <Command exec="run"><Arguments><Argument value="$T$"/><Argument value="$U$"/></Arguments></Command>
           </CommandStartup></Server></Servers>"#,
    );
    assert_eq!(argv(&s, &[]), vec!["run", "T", "u1"]);
}

#[test]
fn predefined_variables_and_port_options() {
    let s = server(
        r#"<Servers><Server name="s" resource="csrc://frontier"><CommandStartup><Options>
           <Option name="PV_SERVER_PORT"><Range type="int" min="1" max="65535" default="4444"/></Option>
           <Option name="PV_SERVER_HOST"><String default="override"/></Option>
           </Options><Command exec="run"><Arguments>
           <Argument value="$PV_SERVER_PORT$"/><Argument value="$PV_SERVER_HOST$"/>
           <Argument value="$PV_CONNECTION_URI$"/><Argument value="$PV_VERSION$"/><Argument value="$PV_CLIENT_HOST$"/>
           <Argument value="$HOME$"/><Argument value="$PV_CONNECT_ID$"/>
           </Arguments></Command></CommandStartup></Server></Servers>"#,
    );
    let r = resolve(&s, &[]).unwrap();
    assert_eq!(
        r.command.as_ref().unwrap().argv,
        // The URI is computed before the options apply, as in ParaView.
        vec![
            "run",
            "4444",
            "override",
            "csrc://frontier",
            "5.11",
            "desk",
            "/home/u",
            "PV_CONNECT_ID"
        ]
    );
    assert_eq!(r.resource.port, Some(4444));
    assert_eq!(r.connect_id, None);
    assert_eq!(r.command.as_ref().unwrap().unknown, vec!["PV_CONNECT_ID"]);
    let strict = resolve::resolve(&s, &[], &mut ctx(0.5), Strictness { strict: true }).unwrap_err();
    assert_eq!(
        strict[0].to_string(),
        "the command refers to $PV_CONNECT_ID$ with no value"
    );
}

#[test]
fn connect_id_exists_only_when_declared() {
    let s = with_options(
        r#"<Option name="PV_CONNECT_ID" readonly="true"><Range type="int" min="1" max="100" default="random"/></Option>"#,
        r#"<Argument value="--connect-id=$PV_CONNECT_ID$"/>"#,
    );
    let r = resolve(&s, &[]).unwrap();
    assert_eq!(r.connect_id, Some(50));
    assert_eq!(r.command.unwrap().argv, vec!["run", "--connect-id=50"]);
}

#[test]
fn command_assembly_timing_and_legacy_timeout() {
    let s = server(
        r#"<Servers><Server name="s" resource="cs://h"><CommandStartup>
           <Command exec="ssh" timeout="7" delay="-1"><Arguments>
             <Argument value="-N 1"/><Argument value="a&quot;b c"/><Argument value=""/><Argument value="x"/>
           </Arguments></Command></CommandStartup></Server></Servers>"#,
    );
    let cmd = resolve(&s, &[]).unwrap().command.unwrap();
    assert_eq!(cmd.string, "ssh \"-N 1\" \"a\"b c\"  x");
    assert_eq!(cmd.argv, vec!["ssh", "-N 1", "ab", "c  x"]);
    assert_eq!((cmd.process_wait, cmd.delay), (7.0, -1.0));
}

#[test]
fn ssh_command_wraps_the_exec() {
    let s = server(
        r#"<Servers><Server name="s" resource="csrc://cluster.example:5555"><CommandStartup>
           <SSHCommand exec="/opt/start.sh" delay="5"><SSHConfig user="alice">
             <Terminal exec="xterm"/><Askpass/><PortForwarding local="6666"/></SSHConfig>
           <Arguments><Argument value="$PV_SSH_PF_SERVER_PORT$"/></Arguments></SSHCommand>
           </CommandStartup></Server></Servers>"#,
    );
    assert_eq!(
        argv(&s, &[]),
        vec![
            "setsid",
            "xterm",
            "-e",
            "/usr/bin/ssh",
            "-R",
            "6666:localhost:5555",
            "alice@cluster.example",
            "/opt/start.sh",
            "5555"
        ]
    );
    let s = server(
        r#"<Servers><Server name="s" resource="cs://cluster.example"><CommandStartup>
           <SSHCommand exec="start"><SSHConfig><SSH exec="myssh"/><PortForwarding/></SSHConfig></SSHCommand>
           </CommandStartup></Server></Servers>"#,
    );
    assert_eq!(
        argv(&s, &[]),
        vec!["myssh", "-L", "-1:localhost:-1", "cluster.example", "start"]
    );
}

#[test]
fn manual_servers_have_no_command() {
    let s = server(
        r#"<Servers><Server name="m" resource="cs://h:2"><ManualStartup/></Server></Servers>"#,
    );
    let r = resolve(&s, &[]).unwrap();
    assert!(r.command.is_none());
    assert_eq!(r.endpoint.to_string(), "client connects to h:2");
}

// ---------------------------------------------------------------------------------------------
// Corners measured with ParaView 5.11 (tests/paraview-oracle/probes.pvsc; docs/paraview-compat.md).

fn warnings_of(xml: &str) -> Vec<String> {
    parse_source(Source::new("test.pvsc", xml))
        .diagnostics
        .iter()
        .filter(|d| !d.is_error())
        .map(|d| d.render())
        .collect()
}

#[test]
fn range_edges_follow_the_spin_box() {
    let s = with_options(
        r#"<Option name="NEG"><Range type="int" min="-50" max="10" default="-20"/></Option>
           <Option name="NEG_NODEF"><Range type="int" min="-50" max="10"/></Option>
           <Option name="BELOW"><Range type="int" min="5" max="10" default="2"/></Option>
           <Option name="MAXFRAC"><Range type="int" min="1" max="10.5" default="50"/></Option>
           <Option name="MAXFRAC_HI"><Range type="int" min="1" max="10.5" default="150"/></Option>
           <Option name="NOMAX"><Range type="int" min="1" default="2000000000"/></Option>
           <Option name="NOMIN"><Range type="int" max="10" default="-5"/></Option>
           <Option name="MINABOVE"><Range type="int" min="10" max="5" default="7"/></Option>
           <Option name="MINFRAC"><Range type="int" min="2.5" max="10" default="-3"/></Option>
           <Option name="DEFFRAC"><Range type="int" min="2" max="10" default="3.7"/></Option>
           <Option name="DEFSPACE"><Range type="int" min="0" max="10" default=" +4 "/></Option>
           <Option name="D_BELOW"><Range type="double" min="0.5" max="1" default="0.1"/></Option>
           <Option name="D_BIG"><Range type="double" min="0" default="100000000"/></Option>
           <Option name="D_NOMAX"><Range type="double" min="0" default="123456.789"/></Option>
           <Option name="D_MINABOVE"><Range type="double" min="2" max="1" default="1.5"/></Option>
           <Option name="D_MAXBAD"><Range type="double" min="0" max="abc" default="150"/></Option>
           <Option name="D_NEG_NODEF"><Range type="double" min="-5" max="10"/></Option>"#,
        "",
    );
    let r = resolve(&s, &[]).unwrap();
    let got: Vec<(String, String)> = r
        .options
        .iter()
        .map(|o| (o.name.clone(), o.value.clone()))
        .collect();
    let want: Vec<(String, String)> = [
        ("NEG", "-20"),
        ("NEG_NODEF", "0"),
        ("BELOW", "5"),
        ("MAXFRAC", "50"),
        ("MAXFRAC_HI", "99"),
        ("NOMAX", "1215752191"),
        ("NOMIN", "0"),
        ("MINABOVE", "5"),
        ("MINFRAC", "0"),
        ("DEFFRAC", "2"),
        ("DEFSPACE", "4"),
        ("D_BELOW", "0.5"),
        ("D_BIG", "1e+08"),
        ("D_NOMAX", "123456.79"),
        ("D_MINABOVE", "1"),
        ("D_MAXBAD", "99.99"),
        ("D_NEG_NODEF", "0"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want);
    // `--set` is checked against the range ParaView ends up with.
    assert!(resolve(&s, &["MAXFRAC=99"]).is_ok());
    assert!(resolve(&s, &["MAXFRAC=100"]).is_err());
}

#[test]
fn random_without_max_draws_between_zero_and_min() {
    let s = with_options(
        r#"<Option name="NOMAX"><Range type="int" min="40000" default="random"/></Option>
           <Option name="NOMAX_NEG"><Range type="int" min="-100" default="random"/></Option>
           <Option name="NOMIN"><Range type="int" max="50" default="random"/></Option>
           <Option name="MAXFRAC"><Range type="int" min="10" max="20.5" default="random"/></Option>
           <Option name="D_NOMIN"><Range type="double" max="50" default="random"/></Option>"#,
        "",
    );
    for noise in [0.0, 0.25, 1.0] {
        let r = resolve::resolve(&s, &[], &mut ctx(noise), Strictness::default()).unwrap();
        // max reads as 0: the draw lies in [0, 40000], then the spin box raises it to 40000.
        assert_eq!(opt(&r, "NOMAX"), ("40000".into(), Origin::Random));
        assert_eq!(opt(&r, "MAXFRAC").0, "10");
        let neg: i64 = opt(&r, "NOMAX_NEG").0.parse().unwrap();
        assert_eq!(neg, (-100.0 + 100.0 * noise) as i64);
    }
    let r = resolve::resolve(&s, &[], &mut ctx(0.25), Strictness::default()).unwrap();
    assert_eq!(opt(&r, "NOMIN").0, "12");
    assert_eq!(opt(&r, "D_NOMIN").0, "12.5");
    let w = warnings_of(
        r#"<Servers><Server name="s" resource="csrc://localhost:1"><CommandStartup><Options>
        <Option name="P"><Range type="int" min="40000" default="random"/></Option></Options>
        <Command exec="run"/></CommandStartup></Server></Servers>"#,
    );
    assert!(
        w.iter().any(|w| w.contains("draws between 0 and min")),
        "{w:?}"
    );
}

#[test]
fn nameless_set_and_option_live_under_the_empty_name() {
    let s = with_options(
        r#"<Set value="set-no-name"/><Set name="NO_VALUE"/>"#,
        r#"<Argument value="a$$b"/><Argument value="v=$NO_VALUE$"/>"#,
    );
    let r = resolve(&s, &[]).unwrap();
    assert_eq!(
        r.command.as_ref().unwrap().argv,
        vec!["run", "aset-no-nameb", "v="]
    );
    // ParaView does not export the empty name.
    assert!(!r.variables.contains_key(""));
    let s = with_options(
        r#"<Set value="set-no-name"/><Option label="Nameless"><String default="option-no-name"/></Option>"#,
        r#"<Argument value="a$$b"/>"#,
    );
    assert_eq!(argv(&s, &[]), vec!["run", "aoption-no-nameb"]);
    let w = warnings_of(
        r#"<Servers><Server name="s" resource="csrc://localhost:1"><CommandStartup><Options>
        <Option><String/></Option><Set value="x"/></Options><Command exec="run"/></CommandStartup></Server></Servers>"#,
    );
    assert_eq!(
        w.iter().filter(|w| w.contains("empty name")).count(),
        2,
        "{w:?}"
    );
}

#[test]
fn resource_hosts_are_read_like_qurl() {
    let with = |resource: &str| {
        server(&format!(
            r#"<Servers><Server name="s" resource="{resource}"><CommandStartup>
            <Command exec="run"><Arguments><Argument value="$PV_SERVER_HOST$"/>
            <Argument value="$PV_DATA_SERVER_HOST$"/><Argument value="$PV_RENDER_SERVER_HOST$"/>
            <Argument value="$PV_CONNECTION_URI$"/></Arguments></Command>
            </CommandStartup></Server></Servers>"#
        ))
    };
    let r = resolve(&with("cs://alice@Cluster.Invalid:39112"), &[]).unwrap();
    assert_eq!(
        r.command.unwrap().argv,
        vec!["run", "cluster.invalid", "cs://cluster.invalid:39112"]
    );
    let r = resolve(&with("csrc://LOGIN:11111"), &[]).unwrap();
    assert_eq!(r.lookup("PV_SERVER_HOST"), Some("login"));
    let r = resolve(&with("cdsrs://DS.Invalid:1/RS.Invalid:2"), &[]).unwrap();
    assert_eq!(r.lookup("PV_DATA_SERVER_HOST"), Some("ds.invalid"));
    assert_eq!(r.lookup("PV_RENDER_SERVER_HOST"), Some("RS.Invalid"));
    assert_eq!(
        r.lookup("PV_CONNECTION_URI"),
        Some("cdsrs://ds.invalid:1//RS.Invalid:2")
    );
    let s = server(
        r#"<Servers><Server name="s" resource="cs://carol@Gateway.Invalid:39113"><CommandStartup>
        <SSHCommand exec="start"><SSHConfig user="dave"><PortForwarding/></SSHConfig></SSHCommand>
        </CommandStartup></Server></Servers>"#,
    );
    assert_eq!(
        argv(&s, &[]),
        vec![
            "/usr/bin/ssh",
            "-L",
            "39113:localhost:39113",
            "dave@gateway.invalid",
            "start"
        ]
    );
    let w = warnings_of(
        r#"<Servers><Server name="s" resource="cs://alice@h:1"><ManualStartup/></Server></Servers>"#,
    );
    assert!(w.iter().any(|w| w.contains("`alice@`")), "{w:?}");
}

#[test]
fn delay_and_process_wait_are_read_like_an_istream() {
    let cmd = |attrs: &str| {
        let report = parse_source(Source::new(
            "test.pvsc",
            format!(
                r#"<Servers><Server name="s" resource="cs://localhost:1"><CommandStartup>
                <Command exec="run" {attrs}/></CommandStartup></Server></Servers>"#
            ),
        ));
        let warnings: Vec<String> = report
            .diagnostics
            .iter()
            .filter(|d| !d.is_error())
            .map(|d| d.render())
            .collect();
        let c = report.servers.first().map(|s| {
            let c = s.command().unwrap();
            (c.delay, c.process_wait)
        });
        (c, report.errors, warnings)
    };
    assert_eq!(cmd(r#"delay=" 5 " process_wait=" 5 ""#).0, Some((5.0, 5.0)));
    assert_eq!(cmd(r#"delay="2.5" process_wait="5.5""#).0, Some((2.5, 5.5)));
    assert_eq!(cmd(r#"delay="+3" process_wait="+3""#).0, Some((3.0, 3.0)));
    assert_eq!(
        cmd(r#"delay="1e1" process_wait="4e0""#).0,
        Some((10.0, 4.0))
    );
    // ParaView reads the leading `0` of `0x4`: so does pvlaunch, and says so.
    let (c, errors, warnings) = cmd(r#"delay="0x4""#);
    assert_eq!((c, errors), (Some((0.0, 0.0)), 0));
    assert!(
        warnings.iter().any(|w| w.contains("leading `0`")),
        "{warnings:?}"
    );
    for bad in ["nan", "inf", "soon", "", "1e"] {
        let (c, errors, _) = cmd(&format!(r#"delay="{bad}""#));
        assert_eq!((c, errors), (None, 1), "{bad}");
    }
}

#[test]
fn show_names_paraviews_own_definition_when_it_has_one() {
    use pvlaunch::profile::Catalog;
    use pvlaunch::profile::discover::{Candidate, Origin as From};
    let dir = tempfile::tempdir().unwrap();
    let body = |arg: &str, extra: &str| {
        format!(
            r#"<Servers><Server name="both" resource="csrc://localhost:1"><CommandStartup>
            <Command exec="run"><Arguments><Argument value="{arg}"/></Arguments></Command>
            </CommandStartup></Server>{extra}</Servers>"#
        )
    };
    let user = dir.path().join("servers.pvsc");
    let given = dir.path().join("given.pvsc");
    std::fs::write(&user, body("from-user-file", "")).unwrap();
    let only_f = r#"<Server name="only-f" resource="csrc://localhost:2"><ManualStartup/></Server>"#;
    std::fs::write(&given, body("from-f", only_f)).unwrap();
    let catalog = Catalog::load(&[
        Candidate {
            path: user.clone(),
            origin: From::ParaView,
            required: false,
        },
        Candidate {
            path: given.clone(),
            origin: From::CommandLine,
            required: true,
        },
    ]);
    let entry = catalog.get("both").unwrap();
    assert_eq!(entry.origin, From::CommandLine, "-f wins for pvlaunch");
    let p = catalog.paraview_definition(entry);
    assert!(!p.same);
    assert_eq!((p.origin, p.line), (From::ParaView, 1));
    assert!(p.file.ends_with("servers.pvsc"), "{}", p.file);
    let mut ctx = ctx(0.5);
    let r = resolve::resolve(&entry.server, &[], &mut ctx, Strictness::default()).unwrap();
    let text = pvlaunch::commands::render_show_with(entry, &r, None, Some(&p));
    assert!(
        text.contains("in ParaView ") && text.contains("ParaView's own file wins"),
        "{text}"
    );
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["same"], false);
    assert_eq!(json["origin"], "para-view"); // as `origin` in show --json
    let only = catalog.get("only-f").unwrap();
    assert!(catalog.paraview_definition(only).same);
}

#[test]
fn internal_entities_expand_and_are_bounded() {
    let s = server(
        r#"<?xml version="1.0"?>
<!DOCTYPE Servers [
  <!ENTITY host "gateway.invalid">
  <!ENTITY login "&user;@&host;">
  <!ENTITY user "erin">
]>
<Servers><Server name="s" resource="csrc://localhost:1"><CommandStartup>
  <Options><Set name="LOGIN" value="&login;"/></Options>
  <Command exec="run"><Arguments><Argument value="&login;"/><Argument value="$LOGIN$"/>
  <Argument value="x&host;y"/></Arguments></Command></CommandStartup></Server></Servers>"#,
    );
    assert_eq!(
        argv(&s, &[]),
        vec![
            "run",
            "erin@gateway.invalid",
            "erin@gateway.invalid",
            "xgateway.invalidy"
        ]
    );
    // A billion laughs stops at the cap, at the attribute that uses it.
    let mut dtd = String::from(r#"<!ENTITY e0 "lollollollol">"#);
    for i in 1..10 {
        dtd.push_str(&format!(
            r#"<!ENTITY e{i} "{}">"#,
            format!("&e{};", i - 1).repeat(10)
        ));
    }
    let text = format!(
        "<!DOCTYPE Servers [{dtd}]>\n<Servers><Server name=\"&e9;\" resource=\"cs://h:1\"><ManualStartup/></Server></Servers>"
    );
    let report = parse_source(Source::new("test.pvsc", text));
    assert!(report.servers.is_empty());
    let e = report.rendered_errors();
    assert!(
        e.contains("65536 bytes") && e.contains("test.pvsc:2:"),
        "{e}"
    );
}

#[test]
fn declared_encodings_are_decoded_and_show_warns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.pvsc");
    let text = "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<Servers><Server name=\"s\" resource=\"csrc://localhost:1\"><CommandStartup>\
        <Options><Set name=\"CITY\" value=\"K\u{f6}ln\"/></Options>\
        <Command exec=\"run\"><Arguments><Argument value=\"caf\u{e9}\"/><Argument value=\"$CITY$\"/></Arguments></Command>\
        </CommandStartup></Server></Servers>";
    let bytes: Vec<u8> = text.chars().map(|c| c as u32 as u8).collect();
    std::fs::write(&path, bytes).unwrap();
    let report = pvlaunch::profile::read_file(&path).unwrap();
    assert_eq!(report.rendered_errors(), "");
    let s = &report.servers[0];
    let r = resolve(s, &[]).unwrap();
    assert_eq!(
        r.command.as_ref().unwrap().argv,
        vec!["run", "café", "Köln"]
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("ISO-8859-1") && w.contains("UTF-8")),
        "{:?}",
        r.warnings
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("`cafÃ©`")),
        "{:?}",
        r.warnings
    );
    // An encoding expat does not know is an error; undeclared non-UTF-8 bytes too.
    std::fs::write(
        &path,
        b"<?xml version=\"1.0\" encoding=\"KOI8-R\"?><Servers/>",
    )
    .unwrap();
    assert!(
        pvlaunch::profile::read_file(&path)
            .unwrap()
            .rendered_errors()
            .contains("KOI8-R")
    );
    std::fs::write(&path, b"<Servers name=\"\xe9\"/>").unwrap();
    assert!(
        pvlaunch::profile::read_file(&path)
            .unwrap()
            .rendered_errors()
            .contains("UTF-8")
    );
    // UTF-16 with a byte-order mark.
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain("<Servers/>".encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    std::fs::write(&path, utf16).unwrap();
    assert_eq!(
        pvlaunch::profile::read_file(&path)
            .unwrap()
            .rendered_errors(),
        ""
    );
}

#[test]
fn non_ascii_argument_text_makes_show_warn() {
    let s = with_options(
        r#"<Set name="WORD" value="naïve"/>"#,
        r#"<Argument value="café"/><Argument value="$WORD$"/>"#,
    );
    let r = resolve(&s, &[]).unwrap();
    assert_eq!(
        r.command.as_ref().unwrap().argv,
        vec!["run", "café", "naïve"]
    );
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(r.warnings[0].contains("`cafÃ©`"), "{:?}", r.warnings);
}
