//! The report of `pvlaunch check`, for a person (one row per check) and as JSON.

use std::fmt::Write;

use super::{Report, Verdict};

/// The report as text: a row per check (verdict, id, finding), its evidence and fix indented
/// under it, then the recipes and what `auto` would take.
pub fn render(report: &Report) -> String {
    let mut s = String::new();
    let what = match &report.profile {
        Some(p) => format!("profile `{p}` (login {})", report.login),
        None => format!("login {}", report.login),
    };
    let _ = writeln!(s, "pvlaunch check: {what}\n");
    for row in &report.checks {
        let _ = writeln!(
            s,
            "{:<7} {:<20} {}",
            row.verdict.name(),
            row.id.name(),
            row.detail
        );
        if matches!(row.verdict, Verdict::Fail | Verdict::Warn) {
            if let Some(e) = &row.evidence {
                let _ = writeln!(s, "{:28}$ {}", "", one_line(&e.command, 200));
                for line in e.output.lines().take(4) {
                    let _ = writeln!(s, "{:28}> {}", "", one_line(line, 200));
                }
            }
            if let Some(fix) = &row.fix {
                let _ = writeln!(s, "{:28}fix: {fix}", "");
            }
        }
    }
    let _ = writeln!(s, "\nrecipes:");
    for r in &report.recipes {
        let why = if r.works {
            if r.unknown.is_empty() {
                "works".to_string()
            } else {
                format!("should work (not checked: {})", names(&r.unknown))
            }
        } else {
            format!("cannot work ({})", names(&r.blocked_by))
        };
        let _ = writeln!(s, "  {:<16} {why}", r.recipe.name());
    }
    let _ = match (report.auto, report.chosen) {
        (Some(a), _) => writeln!(s, "\nauto takes: {}", a.name()),
        (None, Some(c)) => writeln!(
            s,
            "\nauto takes: none of its recipes works here; use recipe `{}` (with a cs:// resource; `pvlaunch init` writes it)",
            c.name()
        ),
        (None, None) => writeln!(
            s,
            "\nno recipe can work here: see the fixes above (exit code {})",
            report.exit_code
        ),
    };
    s
}

fn names(ids: &[super::Id]) -> String {
    ids.iter().map(|i| i.name()).collect::<Vec<_>>().join(", ")
}

/// One line of at most `max` characters, escapes removed.
fn one_line(text: &str, max: usize) -> String {
    let clean = crate::term::sanitize(text).replace(['\n', '\r'], " ");
    if clean.chars().count() > max {
        let cut: String = clean.chars().take(max).collect();
        format!("{cut}...")
    } else {
        clean
    }
}

/// The report as JSON (documented in docs/getting-started.md).
pub fn json(report: &Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(|_| "{}".into())
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;

    fn report() -> Report {
        let mut rows: Vec<Row> = Id::ALL.iter().map(|&id| Row::ok(id, "fine")).collect();
        rows[9] = Row::warn(
            Id::FwdGatewayPorts,
            "bound to 127.0.0.1:4000",
            "use the relay",
        )
        .evidence("cat /proc/net/tcp", "127.0.0.1:4000 LISTEN");
        let mut r = Report::new(None, "login".into(), order(rows), SiteFacts::default());
        r.profile = Some("site".into());
        r
    }

    fn order(mut rows: Vec<Row>) -> Vec<Row> {
        rows.sort_by_key(|r| Id::ALL.iter().position(|i| *i == r.id));
        rows
    }

    #[test]
    fn text_shows_evidence_and_fix_for_warnings_and_the_choice() {
        let text = render(&report());
        assert!(
            text.contains("warn    fwd.gateway_ports    bound to 127.0.0.1:4000"),
            "{text}"
        );
        assert!(text.contains("$ cat /proc/net/tcp"), "{text}");
        assert!(text.contains("fix: use the relay"), "{text}");
        assert!(
            text.contains("reverse          cannot work (fwd.gateway_ports)"),
            "{text}"
        );
        assert!(text.contains("auto takes: relay"), "{text}");
    }

    #[test]
    fn json_has_stable_ids_and_the_verdicts() {
        let v: serde_json::Value = serde_json::from_str(&json(&report())).unwrap();
        let checks = v["checks"].as_array().unwrap();
        assert_eq!(checks.len(), Id::ALL.len());
        let gp = checks
            .iter()
            .find(|c| c["id"] == "fwd.gateway_ports")
            .unwrap();
        assert_eq!(gp["verdict"], "warn");
        assert_eq!(gp["evidence"]["command"], "cat /proc/net/tcp");
        assert_eq!(v["auto"], "relay");
        assert_eq!(v["chosen"], "relay");
        assert_eq!(v["exit_code"], 0);
        assert_eq!(v["recipes"][0]["recipe"], "reverse");
        assert_eq!(v["recipes"][0]["works"], false);
        assert_eq!(v["recipes"][0]["blocked_by"][0], "fwd.gateway_ports");
    }
}
