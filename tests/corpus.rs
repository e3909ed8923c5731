//! Every server of every real-world file in `../shared/pvsc-corpus/` parses, and its argv agrees
//! with the ParaView 6.x reference listing that comes with the corpus.
//!
//! The corpus lives beside the project (CI has it); a user's clone has none. Without it these
//! tests say loudly that they were skipped, and with `CI=true` they fail instead.

use std::path::PathBuf;

use pvlaunch::profile::resolve::{self, Context, Strictness};
use pvlaunch::profile::{self, Catalog, discover};

fn corpus_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/pvsc-corpus");
    if dir.is_dir() {
        return Some(dir);
    }
    let msg = format!(
        "SKIPPED: the .pvsc corpus is not at {} (it sits beside the project in CI)",
        dir.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}; CI=true makes this a failure");
    }
    eprintln!("\n*** {msg} ***\n");
    None
}

/// The reference was produced with every random draw at 0.5, version 6.0.1, no environment,
/// `ssh` for the ssh program and `<auto-terminal>` for the terminal.
fn reference_context() -> Context {
    Context {
        client_host: "workstation".into(),
        find_program: Box::new(|name| match name {
            "ssh" => Some("ssh".into()),
            "x-terminal-emulator" => Some("<auto-terminal>".into()),
            _ => None,
        }),
        ..Context::fixed("6.0.1", 0.5)
    }
}

#[test]
fn every_corpus_file_parses_without_errors() {
    let Some(dir) = corpus_dir() else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pvsc"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 9, "the corpus holds nine files");
    let mut servers = 0;
    for f in &files {
        let report = profile::read_file(f).unwrap();
        let errors = report.rendered_errors();
        assert!(errors.is_empty(), "{}:\n{errors}", f.display());
        assert!(!report.servers.is_empty(), "{} has no servers", f.display());
        for s in &report.servers {
            let mut ctx = reference_context();
            resolve::resolve(s, &[], &mut ctx, Strictness::default())
                .unwrap_or_else(|e| panic!("{} / {}: {e:?}", f.display(), s.name));
            servers += 1;
        }
    }
    assert_eq!(servers, 12);
}

#[test]
fn argv_matches_the_paraview_reference() {
    let Some(dir) = corpus_dir() else { return };
    let reference =
        std::fs::read_to_string(dir.join("expected-argv.paraview6-reference.jsonl")).unwrap();
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for line in reference.lines().filter(|l| !l.trim().is_empty()) {
        let expected: serde_json::Value = serde_json::from_str(line).unwrap();
        let file = dir.join(expected["file"].as_str().unwrap());
        let name = expected["name"].as_str().unwrap();
        let catalog = Catalog::load(&[discover::Candidate {
            path: file.clone(),
            origin: discover::Origin::CommandLine,
            required: true,
        }]);
        let entry = catalog
            .get(name)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut ctx = reference_context();
        let resolved =
            resolve::resolve(&entry.server, &[], &mut ctx, Strictness::default()).unwrap();
        assert_eq!(
            entry.server.startup.kind(),
            expected["startup"].as_str().unwrap(),
            "{name}: startup"
        );
        assert_eq!(
            resolved.resource.scheme.as_str(),
            expected["scheme"].as_str().unwrap(),
            "{name}: scheme"
        );
        let Some(argv) = expected.get("argv") else {
            assert!(
                resolved.command.is_none(),
                "{name}: a manual server runs nothing"
            );
            checked += 1;
            continue;
        };
        let want: Vec<String> = serde_json::from_value(argv.clone()).unwrap();
        let got = resolved.command.as_ref().expect("a command").argv.clone();
        if want != got {
            mismatches.push(format!("{name}:\n  want {want:?}\n  got  {got:?}"));
        }
        let listen = expected["listen_or_connect"].as_str().unwrap();
        let endpoint = match &resolved.endpoint {
            profile::resource::Endpoint::Listen { port } => format!("listen localhost:{port}"),
            profile::resource::Endpoint::Connect { host, port } => format!("connect {host}:{port}"),
            other => format!("{other:?}"),
        };
        assert_eq!(endpoint, listen, "{name}: endpoint");
        checked += 1;
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatch(es):\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert_eq!(checked, 12, "every reference line was checked");
}
