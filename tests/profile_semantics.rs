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
