//! One parser per value: what `validate` accepts, `show` and `connect` accept, and the other way
//! round. Walltimes, schedulers, counts and the ParaView version each come from one place.

use std::collections::BTreeMap;

use pvlaunch::client::Mode;
use pvlaunch::commands::{PrepareError, check_report, prepare};
use pvlaunch::plan::{self, Fresh, Overrides};
use pvlaunch::profile::diag::Source;
use pvlaunch::profile::parse::{FileReport, parse_source};
use pvlaunch::profile::resolve::{Context, Strictness, Version, VersionOrigin};
use pvlaunch::profile::{self, paraview_version, parse_version_output};
use pvlaunch::scheduler::{Kind, Walltime};

fn profile(job: &str, options: &str) -> String {
    format!(
        r#"<Servers><Server name="s" resource="csrc://localhost:11111"><CommandStartup>
<Options>{options}</Options><Command exec="pvlaunch"/></CommandStartup>
<PVLaunch version="1"><Login host="login"/>
<Job {job}/>
</PVLaunch></Server></Servers>"#
    )
}

/// Parse and validate as `pvlaunch validate` does.
fn validated(text: &str) -> FileReport {
    let mut report = parse_source(Source::new("t.pvsc", text));
    check_report(&mut report, |_| Context::fixed("5.11.0", 0.5));
    report
}

fn plan_of(report: &FileReport) -> Result<plan::Plan, String> {
    let server = &report.servers[0];
    let mut ctx = Context::fixed("5.11.0", 0.5);
    let p = prepare(server, &report.source, &[], &mut ctx, Strictness::default())
        .map_err(|e| format!("{e:?}"))?;
    let launch = p.launch.unwrap();
    let target = pvlaunch::ssh::Target {
        program: "ssh".into(),
        destination: launch.login_host.clone(),
        user: None,
        port: None,
        jump_hosts: vec![],
        control_path: "/tmp/x/cm".into(),
        extra_options: vec![],
    };
    plan::build(
        &p.resolved,
        &launch,
        Mode::Wait,
        &Overrides::default(),
        &target,
        true,
        Fresh {
            connect_id: 7,
            tag: "t".into(),
        },
    )
    .map_err(|e| e.to_string())
}

/// `10:00` and `01:99:00` passed validate (its own walltime grammar) and failed connect (the
/// scheduler's). Now both use `scheduler::Walltime`, literal or substituted.
#[test]
fn walltimes_are_judged_by_the_scheduler_parser_everywhere() {
    for bad in ["10:00", "01:99:00", "0", "1h"] {
        let literal = validated(&profile(&format!(r#"walltime="{bad}""#), ""));
        assert!(literal.has_errors(), "{bad}");
        assert!(literal.servers.is_empty());
        let e = literal.rendered_errors();
        assert!(
            e.contains(&format!("walltime `{bad}` is not a duration")),
            "{e}"
        );
        assert!(e.contains("t.pvsc:4:6"), "{e}");
        assert!(bad.parse::<Walltime>().is_err());

        let option = format!(r#"<Option name="W"><String default="{bad}"/></Option>"#);
        let templated = validated(&profile(r#"walltime="$W$""#, &option));
        assert_eq!(templated.error_count(), 1, "{bad}");
        assert!(templated.servers.is_empty());
        let e = templated.rendered_errors();
        assert!(e.contains("PVLaunch/Job@walltime"), "{e}");
    }
    for good in ["90", "1:30:00", "2-00:00:00", "48:00:00"] {
        let report = validated(&profile(&format!(r#"walltime="{good}""#), ""));
        assert!(!report.has_errors(), "{good}: {}", report.rendered_errors());
        let p = plan_of(&report).unwrap();
        assert_eq!(p.job.walltime, Some(good.parse::<Walltime>().unwrap()));
    }
}

/// Torque is a scheduler kind with its own job script; the profile layer had its own list
/// without it.
#[test]
fn every_scheduler_kind_is_accepted_and_reaches_the_plan() {
    for kind in Kind::ALL {
        // Without a scheduler the job runs on the login node: one node only.
        let nodes = if kind == Kind::None { 1 } else { 2 };
        let report = validated(&profile(
            &format!(
                r#"scheduler="{}" nodes="{nodes}" ranks-per-node="3""#,
                kind.name()
            ),
            "",
        ));
        assert!(!report.has_errors(), "{kind}: {}", report.rendered_errors());
        let p = plan_of(&report).unwrap();
        assert_eq!(p.scheduler, kind);
    }
    let torque = plan_of(&validated(&profile(r#"scheduler="torque" nodes="2""#, ""))).unwrap();
    assert!(
        torque.job_script.contains("#PBS -l nodes=2:ppn=1"),
        "{}",
        torque.job_script
    );
    // What the job script cannot say is found by validate, not by connect.
    let none = validated(&profile(r#"scheduler="none" nodes="2""#, ""));
    assert!(
        none.rendered_errors()
            .contains("the none job script cannot be written: more than one node"),
        "{}",
        none.rendered_errors()
    );
    let bad = validated(&profile(r#"scheduler="torqe""#, ""));
    assert!(
        bad.rendered_errors().contains("did you mean `torque`?"),
        "{}",
        bad.rendered_errors()
    );
}

/// Counts, ports and timeouts: a templated value that its parser refuses is refused by
/// validate, at its place, and never reaches a panic (`nodes * ranks` used to overflow).
#[test]
fn templated_numbers_are_checked_by_validate_with_the_same_parsers() {
    let option = r#"<Option name="N"><String default="18446744073709551615"/></Option>"#;
    for job in [
        r#"nodes="$N$" ranks-per-node="$N$""#,
        r#"queue-timeout="$N$""#,
    ] {
        let report = validated(&profile(job, option));
        assert!(report.has_errors(), "{job}");
        assert!(report.servers.is_empty());
        let mut ctx = Context::fixed("5.11.0", 0.5);
        let fresh = parse_source(Source::new("t.pvsc", profile(job, option)));
        assert!(matches!(
            prepare(
                &fresh.servers[0],
                &fresh.source,
                &[],
                &mut ctx,
                Strictness::default()
            ),
            Err(PrepareError::Profile(_))
        ));
    }
}

#[test]
fn version_output_of_paraview_and_pvpython() {
    let v = parse_version_output("paraview version 5.11.0\n").unwrap();
    assert_eq!(
        (v.major, v.minor, v.patch, v.full.as_str()),
        (5, 11, 0, "5.11.0")
    );
    let v = parse_version_output("QStandardPaths: ...\nparaview version 6.0.1-RC2\n").unwrap();
    assert_eq!((v.major, v.minor, v.patch), (6, 0, 1));
    assert!(parse_version_output("command not found").is_none());
}

#[test]
fn the_version_comes_from_paraview_then_the_override_then_the_client() {
    let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let client = || {
        Ok((
            Version::parse("5.10.1").unwrap(),
            "/usr/bin/pvpython".to_string(),
        ))
    };
    let unused = || -> Result<(Version, String), String> { panic!("must not probe") };

    let (v, o) = paraview_version(&env(&[("PV_VERSION_FULL", "5.11.2")]), unused, true);
    assert_eq!((v.full.as_str(), o), ("5.11.2", VersionOrigin::Environment));
    let parts = env(&[("PV_VERSION_MAJOR", "5"), ("PV_VERSION_MINOR", "9")]);
    let (v, o) = paraview_version(&parts, unused, true);
    assert_eq!(
        ((v.major, v.minor), o),
        ((5, 9), VersionOrigin::Environment)
    );
    let (v, o) = paraview_version(&env(&[("PVLAUNCH_PARAVIEW_VERSION", "5.12")]), unused, true);
    assert_eq!(((v.major, v.minor), o), ((5, 12), VersionOrigin::Override));

    let (v, o) = paraview_version(&env(&[]), client, true);
    assert_eq!(v.full, "5.10.1");
    assert_eq!(
        o,
        VersionOrigin::Client {
            program: "/usr/bin/pvpython".into()
        }
    );
    let (v, o) = paraview_version(&env(&[]), || Err("no pvpython on PATH".into()), true);
    assert_eq!(v.full, profile::DEFAULT_PARAVIEW_VERSION);
    assert!(matches!(o, VersionOrigin::BuiltIn { reason } if reason.contains("no pvpython")));
    let (_, o) = paraview_version(&env(&[]), unused, false);
    assert!(matches!(o, VersionOrigin::BuiltIn { .. }));
}

/// The probe runs the program with a time limit: a quiet or hanging program costs the limit,
/// then the built-in version is used.
#[cfg(unix)]
#[test]
fn the_probe_reads_a_client_and_gives_up_on_a_hanging_one() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let script = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    };
    let good = script("good", "echo 'paraview version 5.9.1'");
    let v = profile::run_version(&good, std::time::Duration::from_secs(5)).unwrap();
    assert_eq!(v.full, "5.9.1");
    let hang = script("hang", "exec sleep 30");
    let started = std::time::Instant::now();
    let e = profile::run_version(&hang, std::time::Duration::from_millis(300)).unwrap_err();
    assert!(e.contains("no answer"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let quiet = script("quiet", "exit 1");
    assert!(profile::run_version(&quiet, std::time::Duration::from_secs(5)).is_err());
}

/// The ParaView installed on this machine, if any: its answer is the version `show` uses.
#[test]
fn the_local_client_answers_the_probe() {
    let Ok(pvpython) = which::which("pvpython") else {
        eprintln!("\n*** SKIPPED: no pvpython on PATH ***\n");
        return;
    };
    let v = profile::run_version(&pvpython, profile::VERSION_PROBE_TIMEOUT).unwrap();
    assert!(v.major >= 5, "{v:?}");
}
