//! Generated profiles (options, sets, switches, walltimes, delays, names, nesting) and every
//! shipped and corpus file: parsing, validation, resolution, `show` rendering and plan building
//! never panic, and a profile `validate` accepts always yields a plan.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use pvlaunch::client::Mode;
use pvlaunch::commands::{check_report, prepare, render_show};
use pvlaunch::plan::{self, Fresh, Overrides, PlanError};
use pvlaunch::profile::diag::Source;
use pvlaunch::profile::discover::Origin;
use pvlaunch::profile::parse::{FileReport, parse_source};
use pvlaunch::profile::resolve::{self, Context, Strictness};
use pvlaunch::profile::{Entry, read_file};
use pvlaunch::scheduler::Kind;

fn ctx() -> Context {
    Context::fixed("5.11.0", 0.5)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
}

/// Names: plain, near-duplicates, references, odd characters, and a very long one.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => "[A-Z][A-Z0-9_]{0,6}",
        2 => Just("PV_SERVER_PORT".to_string()),
        1 => Just("PV_CONNECT_ID".to_string()),
        1 => Just("".to_string()),
        1 => "[ -~]{0,8}",
        1 => Just("N".repeat(70_000)),
    ]
}

/// Values: literals, references (single, doubled, unknown), numbers of every kind.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9 ._:-]{0,10}",
        3 => "[A-Z][A-Z0-9_]{0,6}".prop_map(|n| format!("${n}$")),
        2 => "[A-Z][A-Z0-9_]{0,6}".prop_map(|n| format!("${n}$${n}$")),
        1 => Just("$$".to_string()),
        1 => prop::sample::select(vec!["nan", "inf", "-1", "1e20", "0", "65536", "18446744073709551616"]).prop_map(str::to_string),
        1 => "[ -~]{0,12}",
    ]
}

fn walltime() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec!["30", "1:30:00", "2-00:00:00", "$W$", "48:00:00"]).prop_map(str::to_string),
        2 => prop::sample::select(vec!["10:00", "01:99:00", "0", "", "$NOPE$", "1-30", "99999999999999999999"]).prop_map(str::to_string),
        1 => "[0-9:-]{0,9}",
    ]
}

fn delay() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(vec!["-1", "2", "0.5", "3600", " 5 ", "0"]).prop_map(str::to_string),
        1 => prop::sample::select(vec!["nan", "inf", "-inf", "-0.5", "1e20", "3601", "soon"]).prop_map(str::to_string),
        1 => any::<f64>().prop_map(|f| f.to_string()),
    ]
}

fn option() -> impl Strategy<Value = String> {
    (name(), 0..6usize, value(), value(), value()).prop_map(|(n, kind, a, b, c)| {
        let ty = match kind {
            0 => format!(r#"<Range type="int" min="{}" max="{}" default="{}"/>"#, esc(&a), esc(&b), esc(&c)),
            1 => format!(r#"<Range type="double" min="{}" max="{}" default="random"/>"#, esc(&a), esc(&b)),
            2 => format!(r#"<String default="{}"/>"#, esc(&a)),
            3 => format!(r#"<Boolean true="{}" false="{}" default="{}"/>"#, esc(&a), esc(&b), esc(&c)),
            4 => format!(r#"<Enumeration default="{}"><Entry value="{}"/><Entry value="{}" label="L"/></Enumeration>"#, esc(&a), esc(&b), esc(&c)),
            _ => r#"<Password/>"#.to_string(),
        };
        format!(r#"<Option name="{}">{ty}</Option>"#, esc(&n))
    })
}

fn item() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => option(),
        3 => (name(), value()).prop_map(|(n, v)| format!(r#"<Set name="{}" value="{}"/>"#, esc(&n), esc(&v))),
        1 => (name(), value(), name(), value()).prop_map(|(s, c, n, v)| format!(
            r#"<Switch name="{}"><Case value="{}"><Set name="{}" value="{}"/></Case></Switch>"#,
            esc(&s), esc(&c), esc(&n), esc(&v)
        )),
    ]
}

#[derive(Debug, Clone)]
struct Job {
    scheduler: String,
    nodes: String,
    ranks: String,
    walltime: Option<String>,
    recipe: String,
    setup: Vec<String>,
    port: String,
}

fn job() -> impl Strategy<Value = Job> {
    let mut schedulers: Vec<String> = Kind::ALL.iter().map(|k| k.name().to_string()).collect();
    schedulers.extend(["SLURM", "sge", "$S$", "pbspro"].map(String::from));
    let good = |v: &'static str| prop_oneof![6 => Just(v.to_string()), 1 => value()];
    (
        prop::sample::select(schedulers),
        prop_oneof![3 => Just("1".to_string()), 3 => Just("$N$".to_string()), 1 => value()],
        good("4"),
        proptest::option::of(walltime()),
        prop::sample::select(vec![
            "auto",
            "auto",
            "reverse",
            "relay",
            "two-hop",
            "reverse-two-hop",
            "$R$",
            "fast",
        ]),
        proptest::collection::vec(
            prop_oneof![4 => Just("module load pv/$PV_VERSION$".to_string()), 1 => value()],
            0..3,
        ),
        good("0"),
    )
        .prop_map(
            |(scheduler, nodes, ranks, walltime, recipe, setup, port)| Job {
                scheduler,
                nodes,
                ranks,
                walltime,
                recipe: recipe.to_string(),
                setup,
                port,
            },
        )
}

fn server() -> impl Strategy<Value = String> {
    (
        name(),
        prop::sample::select(vec!["csrc://localhost:11111", "csrc://localhost:11111", "cs://host:22", "csrc://", "cdsrs://a:1/b:2", "bogus"]),
        proptest::collection::vec(item(), 0..6),
        delay(),
        delay(),
        prop_oneof![3 => job().prop_map(Some), 1 => Just(None)],
        proptest::collection::vec(value(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(n, resource, mut items, delay, wait, job, args, declared)| {
            if declared {
                // The options pvlaunch's settings refer to, with good values.
                items.insert(0, concat!(
                    r#"<Option name="N"><Range type="int" min="1" max="4" default="2"/></Option>"#,
                    r#"<Option name="W"><String default="1:00:00"/></Option>"#,
                    r#"<Set name="S" value="slurm"/><Set name="R" value="reverse"/>"#
                ).to_string());
            }
            let args: String = args
                .iter()
                .map(|a| format!(r#"<Argument value="{}"/>"#, esc(a)))
                .collect();
            let pvlaunch = job.map_or(String::new(), |j| {
                let walltime = j
                    .walltime
                    .map_or(String::new(), |w| format!(r#" walltime="{}""#, esc(&w)));
                let setup: String = j
                    .setup
                    .iter()
                    .map(|l| format!(r#"<Setup line="{}"/>"#, esc(l)))
                    .collect();
                format!(
                    r#"<PVLaunch version="1"><Login host="login"/><Job scheduler="{}" nodes="{}" ranks-per-node="{}"{walltime}>{setup}</Job><Connection recipe="{}" remote-port="{}"/></PVLaunch>"#,
                    esc(&j.scheduler),
                    esc(&j.nodes),
                    esc(&j.ranks),
                    esc(&j.recipe),
                    esc(&j.port)
                )
            });
            format!(
                r#"<Server name="{}" resource="{resource}"><CommandStartup><Options>{}</Options><Command exec="run" delay="{}" process_wait="{}"><Arguments>{args}</Arguments></Command></CommandStartup>{pvlaunch}</Server>"#,
                esc(&n),
                items.concat(),
                esc(&delay),
                esc(&wait)
            )
        })
}

fn modes() -> Vec<Mode> {
    vec![
        Mode::Wait,
        Mode::None,
        Mode::Paraview {
            program: "paraview".into(),
        },
        Mode::Pvpython {
            program: "pvpython".into(),
            script: "s.py".into(),
            args: vec![],
        },
    ]
}

/// Everything a user can make pvlaunch do with one file, none of which may panic; and for
/// every server validate accepts, the plan builds (with the profile's recipe, for every client).
fn exercise(mut report: FileReport) {
    let _ = report.rendered();
    let parsed: Vec<String> = report.servers.iter().map(|s| s.name.clone()).collect();
    for s in &report.servers {
        let _ = resolve::resolve(s, &["A=1".into()], &mut ctx(), Strictness { strict: true });
        if let Ok(r) = resolve::resolve(s, &[], &mut ctx(), Strictness::default()) {
            let launch = s
                .pvlaunch
                .as_ref()
                .and_then(|p| p.resolve(|n| r.lookup(n).map(str::to_string)).ok());
            let entry = Entry {
                server: s.clone(),
                origin: Origin::CommandLine,
                overrides: vec![],
            };
            let _ = render_show(&entry, &r, launch.as_ref());
        }
    }
    check_report(&mut report, |_| ctx());
    let _ = report.rendered();
    assert!(report.servers.len() <= parsed.len());
    if std::env::var_os("COUNT_VALID").is_some() {
        let with = report.servers.iter().filter(|s| s.pvlaunch.is_some());
        eprintln!("VALID {} {}", report.servers.len(), with.count());
    }
    for s in &report.servers {
        // Validate found no error in this server: every step after it succeeds.
        let p = prepare(s, &report.source, &[], &mut ctx(), Strictness::default())
            .unwrap_or_else(|e| panic!("validate accepted `{}` but: {e:?}", s.name));
        let r = resolve::resolve(s, &[], &mut ctx(), Strictness::default()).unwrap();
        let Some(settings) = &s.pvlaunch else {
            assert!(p.launch.is_none());
            continue;
        };
        let launch = settings
            .resolve(|n| r.lookup(n).map(str::to_string))
            .unwrap_or_else(|e| panic!("validate accepted `{}` but: {e:?}", s.name));
        let target = pvlaunch::ssh::Target {
            program: "ssh".into(),
            destination: launch.login_host.clone(),
            user: launch.login_user.clone(),
            port: launch.login_port,
            jump_hosts: launch.jump_hosts.clone(),
            control_path: "/tmp/x/cm".into(),
            extra_options: vec![],
        };
        for mode in modes() {
            let result = plan::build(
                &r,
                &launch,
                mode.clone(),
                &Overrides::default(),
                &target,
                true,
                Fresh {
                    connect_id: 9,
                    tag: "p".into(),
                },
            );
            match result {
                Ok(plan) => {
                    let _ = plan.render();
                }
                // Under ParaView's dialog the resource decides who connects: a conflict with
                // the recipe is a usage error of `connect`, reported as such.
                Err(PlanError::ForwardResource(_) | PlanError::ReverseResource(_))
                    if mode == Mode::None => {}
                Err(e) => panic!("validate accepted `{}` but the plan fails: {e}", s.name),
            }
        }
    }
}

/// 256 cases in the normal test run; `PVLAUNCH_PROPTEST_CASES` raises it (`scripts/test` runs
/// a longer pass under memory and time limits).
fn cases() -> u32 {
    std::env::var("PVLAUNCH_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn generated_profiles_never_panic_and_valid_ones_plan(servers in proptest::collection::vec(server(), 1..4)) {
        let text = format!("<Servers>\n{}\n</Servers>\n", servers.join("\n"));
        exercise(parse_source(Source::new("gen.pvsc", text)));
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pvsc_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pvsc"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_profile_and_invalid_fixture_goes_through_every_step() {
    let mut files = pvsc_files(&root().join("pvsc"));
    assert!(files.len() >= 3);
    files.extend(pvsc_files(&root().join("tests/fixtures/invalid")));
    for f in files {
        exercise(read_file(&f).unwrap());
    }
    // The shipped ones are valid, so each made a plan above.
    for f in pvsc_files(&root().join("pvsc")) {
        let mut report = read_file(&f).unwrap();
        check_report(&mut report, |_| ctx());
        assert!(
            !report.has_errors(),
            "{}:\n{}",
            f.display(),
            report.rendered_errors()
        );
    }
}

#[test]
fn every_corpus_file_goes_through_every_step() {
    let dir = root().join("../shared/pvsc-corpus");
    if !dir.is_dir() {
        let msg = format!("SKIPPED: the .pvsc corpus is not at {}", dir.display());
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}; CI=true makes this a failure");
        }
        eprintln!("\n*** {msg} ***\n");
        return;
    }
    let files = pvsc_files(&dir);
    assert!(!files.is_empty());
    for f in files {
        exercise(read_file(&f).unwrap());
    }
}
