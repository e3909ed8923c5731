//! Arbitrary input never panics the profile reader, and every profile the project ships
//! (pvsc/ and the examples in docs/) parses without errors.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use pvlaunch::profile::diag::Source;
use pvlaunch::profile::parse::parse_source;
use pvlaunch::profile::resolve::{self, Context, Strictness};

fn context() -> Context {
    Context::fixed("6.0.1", 0.5)
}

/// Parse, and resolve whatever parsed: neither step may panic.
fn exercise(text: &str) {
    let report = parse_source(Source::new("fuzz.pvsc", text));
    for d in &report.diagnostics {
        let _ = d.render();
    }
    for s in &report.servers {
        let _ = resolve::resolve(s, &["A=1".into()], &mut context(), Strictness::default());
        if let Some(p) = &s.pvlaunch {
            let _ = p.resolve(|_| Some("1".into()));
        }
    }
}

/// Fragments that make random input look like a profile, so the fuzzer gets past the XML layer.
const PIECES: &[&str] = &[
    "<Servers>",
    "</Servers>",
    "<Server name=\"s\" resource=\"csrc://h:1\">",
    "</Server>",
    "<ManualStartup/>",
    "<CommandStartup>",
    "</CommandStartup>",
    "<Options>",
    "</Options>",
    "<Option name=\"A\">",
    "</Option>",
    "<Range type=\"int\" min=\"1\" max=\"9\" default=\"random\"/>",
    "<Range type=\"double\" min=\"x\"/>",
    "<Enumeration default=\"a\"><Entry value=\"a\"/></Enumeration>",
    "<Boolean true=\"y\"/>",
    "<String/>",
    "<Switch name=\"A\"><Case value=\"1\"><Set name=\"B\" value=\"$A$\"/></Case></Switch>",
    "<Command exec=\"$A$\" delay=\"-1\">",
    "</Command>",
    "<Arguments>",
    "</Arguments>",
    "<Argument value=\"$B$ $$ \"\"\" x\"/>",
    "<SSHCommand exec=\"e\"><SSHConfig user=\"u\"><Terminal/><PortForwarding/></SSHConfig>",
    "</SSHCommand>",
    "<PVLaunch version=\"1\">",
    "</PVLaunch>",
    "<Login host=\"$A$\"/>",
    "<Job nodes=\"$A$\" walltime=\"1:2\"><Setup line=\"x\"/></Job>",
    "<Connection remote-port=\"$A$\"/>",
    "&amp;",
    "&#x0;",
    "&#1114112;",
    "\u{e9}",
    "\n",
    "\r\n",
    "\"",
    "'",
    "<",
    ">",
    "<!-- c -->",
    "<![CDATA[x]]>",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_profile_like_text_never_panics(parts in proptest::collection::vec((0..PIECES.len(), ".{0,3}"), 0..40)) {
        let text: String = parts.iter().map(|(i, junk)| format!("{}{junk}", PIECES[*i])).collect();
        exercise(&text);
    }
}

fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check_clean(name: &str, text: &str) -> usize {
    let report = parse_source(Source::new(name, text));
    let problems: Vec<String> = report.diagnostics.iter().map(|d| d.render()).collect();
    assert!(problems.is_empty(), "{name}:\n{}", problems.join("\n"));
    for s in &report.servers {
        let r = resolve::resolve(s, &[], &mut context(), Strictness { strict: true })
            .unwrap_or_else(|e| panic!("{name} / {}: {e:?}", s.name));
        if let Some(p) = &s.pvlaunch {
            p.resolve(|n| r.lookup(n).map(str::to_string))
                .unwrap_or_else(|e| panic!("{name} / {}: {e:?}", s.name));
        }
    }
    report.servers.len()
}

#[test]
fn every_shipped_profile_parses_cleanly() {
    let dir = project_root().join("pvsc");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pvsc") {
            count += check_clean(
                &path.display().to_string(),
                &std::fs::read_to_string(&path).unwrap(),
            );
        }
    }
    assert!(count >= 3, "pvsc/ holds an example per recipe");
}

/// Every ```xml block in docs/ that holds a <Servers> document.
#[test]
fn every_profile_example_in_the_docs_parses_cleanly() {
    let mut count = 0;
    for dir in [project_root().join("docs"), project_root()] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "md") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, block) in xml_blocks(&text).iter().enumerate() {
                if block.contains("<Servers") {
                    count += check_clean(&format!("{} block {}", rel(&path), i + 1), block);
                }
            }
        }
    }
    assert!(
        count >= 1,
        "docs/profile-format.md shows at least one complete profile"
    );
}

fn rel(p: &Path) -> String {
    p.strip_prefix(project_root())
        .unwrap_or(p)
        .display()
        .to_string()
}

fn xml_blocks(md: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in md.lines() {
        match &mut current {
            None if line.trim_start().starts_with("```xml") => current = Some(String::new()),
            Some(_) if line.trim_start().starts_with("```") => blocks.push(current.take().unwrap()),
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    blocks
}
