//! The layering rule of docs/architecture.md, checked on the source: pure modules use only pure
//! modules (with the named exceptions), and the middle has no cycles (`plan` below `recipe` below
//! `session`; `job` and the recipes never reach up into the session).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Pure modules: data in, data out. Each may use the modules listed.
const PURE: &[(&str, &[&str])] = &[
    ("exit", &[]),
    ("quote", &[]),
    ("suggest", &[]),
    ("events", &["term"]),
    ("scheduler", &["quote"]),
    ("profile", &["suggest", "scheduler", "quote", "exit"]),
    ("pvserver", &["profile", "quote", "scheduler"]),
    ("outcome", &["exit", "pvserver"]),
    (
        "follow",
        &["events", "exit", "outcome", "pvserver", "scheduler"],
    ),
    // The plan uses the pure parts of `client` (Mode, argv, url) and `ssh` (Target's argv).
    (
        "plan",
        &["client", "profile", "pvserver", "quote", "scheduler", "ssh"],
    ),
];

/// Effect modules that must not reach up into what runs them.
const NEVER: &[(&str, &[&str])] = &[
    ("job", &["session", "recipe", "connect", "follow"]),
    // Coming back after a lost link: used by the session, never the other way round.
    ("reconnect", &["session", "connect", "follow", "recipe"]),
    ("recipe", &["session", "connect", "job", "follow"]),
    // What pvlaunch writes on the cluster: used by recipes and the session, uses neither.
    (
        "remote",
        &["session", "recipe", "job", "connect", "follow", "client"],
    ),
    ("ssh", &["session", "recipe", "job", "plan", "connect"]),
    ("client", &["session", "recipe", "job", "plan", "connect"]),
    ("process", &["session", "recipe", "job", "plan", "connect"]),
];

/// `crate::NAME` references outside comments and test modules, per top-level module.
fn references() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let module = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            let refs = out.entry(module.clone()).or_default();
            for line in code.lines() {
                let line = line.trim_start();
                if line.starts_with("//") {
                    continue;
                }
                let line = line.split(" //").next().unwrap();
                let mut rest = line;
                while let Some(i) = rest.find("crate::") {
                    rest = &rest[i + "crate::".len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != module {
                        refs.insert(name);
                    }
                }
            }
        }
    }
    out
}

#[test]
fn pure_modules_use_only_pure_modules() {
    let refs = references();
    let mut bad = vec![];
    for (module, allowed) in PURE {
        let Some(used) = refs.get(*module) else {
            panic!(
                "no module {module} in src/: update the table in this test and docs/architecture.md"
            );
        };
        for u in used {
            if !allowed.contains(&u.as_str()) {
                bad.push(format!("{module} uses crate::{u}"));
            }
        }
    }
    assert!(bad.is_empty(), "layering broken: {bad:?}");
}

#[test]
fn effects_do_not_reach_up() {
    let refs = references();
    let mut bad = vec![];
    for (module, forbidden) in NEVER {
        for u in refs.get(*module).into_iter().flatten() {
            if forbidden.contains(&u.as_str()) {
                bad.push(format!("{module} uses crate::{u}"));
            }
        }
    }
    assert!(bad.is_empty(), "layering broken: {bad:?}");
}

#[test]
fn the_checker_sees_references() {
    // A checker that finds nothing would pass everything.
    let refs = references();
    assert!(refs["session"].contains("follow"));
    assert!(refs["plan"].contains("pvserver"));
    assert!(refs["remote"].contains("ssh"));
}

/// The recipes' one list: the profile layer's `Recipe` (names, `ALL`), which `--recipe` and the
/// plan read. A new variant does not compile until `index` below has it, and then this test
/// fails until `Recipe::ALL` lists it too; every other use is an exhaustive `match` the
/// compiler points out.
#[test]
fn every_recipe_is_in_the_one_list() {
    use pvlaunch::profile::settings::Recipe;
    fn index(r: Recipe) -> usize {
        match r {
            Recipe::Auto => 0,
            Recipe::Reverse => 1,
            Recipe::Relay => 2,
            Recipe::TwoHop => 3,
            Recipe::ReverseTwoHop => 4,
        }
    }
    /// The number of arms in `index`.
    const VARIANTS: usize = 5;
    let mut seen = BTreeSet::new();
    for r in Recipe::ALL {
        assert!(seen.insert(index(r)), "{r:?} twice in Recipe::ALL");
        assert_eq!(
            r.name().parse::<Recipe>(),
            Ok(r),
            "{r:?} round-trips its name"
        );
    }
    assert_eq!(seen.len(), VARIANTS, "Recipe::ALL misses a recipe");
}
