//! Any bytes through the profile reader: parse, render diagnostics, resolve what parsed, and
//! validate it as `pvlaunch validate` does (resolution and a trial job script).
//! Run: `cargo +nightly fuzz run parse_pvsc` from the project root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvlaunch::commands::check_report;
use pvlaunch::profile::diag::Source;
use pvlaunch::profile::parse::parse_source;
use pvlaunch::profile::resolve::{self, Context, Strictness};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut report = parse_source(Source::new("fuzz.pvsc", text.as_ref()));
    let _ = report.rendered();
    for s in &report.servers {
        let mut ctx = Context::fixed("6.0.1", 0.5);
        let _ = resolve::resolve(s, &[], &mut ctx, Strictness::default());
        if let Some(p) = &s.pvlaunch {
            let _ = p.resolve(|_| Some("1".into()));
        }
    }
    check_report(&mut report, |_| Context::fixed("6.0.1", 0.5));
    let _ = report.rendered();
});
