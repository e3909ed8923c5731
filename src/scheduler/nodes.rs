//! Whether a partition still has nodes enough for a job: the verdict over Slurm's node list
//! when a pending reason says nodes are unavailable.
//!
//! Slurm's reasons `ReqNodeNotAvail, UnavailableNodes:node2` and `Nodes required for job are
//! DOWN, DRAINED or reserved for jobs in higher priority partitions` may pass (a node that
//! reboots, a reservation that ends) or not (a node drained by the site stays drained until an
//! administrator resumes it). One look at the partition's nodes ([`slurm_nodes_command`])
//! decides: when fewer nodes than the job needs can ever take a job ([`too_few_nodes`]), the job
//! will never start as asked.

use std::collections::BTreeMap;
use std::fmt;

use super::NeverStarts;

/// What [`too_few_nodes`] finding means, for [`crate::outcome::Failure::NeverStarts`].
pub const NODES_UNAVAILABLE: NeverStarts = NeverStarts {
    why: "the partition has fewer usable nodes than the job asks for (the others are down or drained)",
    change: "ask for fewer nodes (<Job nodes>) or choose another partition (<Job partition>); `sinfo -N -p PARTITION` shows each node's state, and the site's administrators bring drained nodes back",
};

/// Whether a pending reason says that nodes the job needs are not available (down, drained,
/// reserved): worth one look at the partition's nodes.
pub fn nodes_unavailable(reason: &str) -> bool {
    let reason = reason.trim_start_matches('(').trim_start();
    reason.starts_with("ReqNodeNotAvail") || reason.starts_with("Nodes required for job are DOWN")
}

/// The command listing the nodes of `partition` (the default partition's when `None`), one
/// `NAME|STATE` line per node (`NAME|STATE|PARTITION` without a partition; the default one
/// is marked with `*`). Read it with [`too_few_nodes`].
pub fn slurm_nodes_command(partition: Option<&str>) -> Vec<String> {
    let mut cmd: Vec<String> = ["sinfo", "-h", "-N"].map(String::from).to_vec();
    match partition {
        Some(p) => {
            cmd.extend(["-p".into(), p.to_string(), "-o".into(), "%N|%t".into()]);
        }
        None => cmd.extend(["-o".into(), "%N|%t|%P".into()]),
    }
    cmd
}

/// Whether a node in this `sinfo %t` state can never take a new job until an administrator
/// acts: down, drained or draining, failed, or not yet in service. Busy, idle, reserved,
/// powered-down (cloud nodes power up on demand) and not-responding-but-up nodes may.
pub fn unusable(state: &str) -> bool {
    // `*` not responding, `~` powered off, `#` powering up, `%` powering down, `!` pending
    // power down, `$` maintenance reservation, `@` pending reboot, `^` rebooting, `-` planned.
    let base = state
        .trim()
        .trim_end_matches(['*', '~', '#', '%', '!', '$', '@', '^', '-']);
    matches!(
        base.to_ascii_lowercase().as_str(),
        "down"
            | "drain"
            | "drained"
            | "drng"
            | "draining"
            | "fail"
            | "failg"
            | "failing"
            | "futr"
            | "future"
            | "inval"
    )
}

/// The finding: the partition's usable nodes are fewer than the job needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooFewNodes {
    /// Nodes the job asks for.
    pub needed: u32,
    /// Nodes of the partition that may take a job.
    pub usable: u32,
    /// The others, with their `sinfo` state, sorted by name.
    pub unusable: Vec<(String, String)>,
}

impl fmt::Display for TooFewNodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.usable as usize + self.unusable.len();
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        write!(
            f,
            "the job needs {} node{}, the partition has {} usable of {} (",
            self.needed,
            plural(self.needed as usize),
            self.usable,
            total
        )?;
        for (i, (name, state)) in self.unusable.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name} {}", state_in_words(state))?;
        }
        f.write_str(")")
    }
}

/// `drain` -> `drained`, `down*` -> `down`, ...
fn state_in_words(state: &str) -> &'static str {
    let base = state
        .trim()
        .trim_end_matches(['*', '~', '#', '%', '!', '$', '@', '^', '-']);
    match base.to_ascii_lowercase().as_str() {
        "down" => "down",
        "drain" | "drained" => "drained",
        "drng" | "draining" => "draining",
        "fail" | "failg" | "failing" => "failed",
        "futr" | "future" => "not in service yet",
        _ => "unusable",
    }
}

/// The verdict over [`slurm_nodes_command`]'s output: `Some` when fewer nodes than `needed`
/// can take a job. `None` when there are enough, or the output says nothing usable (no
/// lines, or a partition not found): then the wait goes on, bounded by the queue timeout.
pub fn too_few_nodes(sinfo: &str, needed: u32) -> Option<TooFewNodes> {
    // A node appears once per partition it is in: keep one state per name.
    let mut nodes: BTreeMap<&str, &str> = BTreeMap::new();
    let rows: Vec<Vec<&str>> = sinfo
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    let default_only = rows
        .iter()
        .any(|r| r.get(2).is_some_and(|p| p.ends_with('*')));
    for row in &rows {
        let (Some(name), Some(state)) = (row.first(), row.get(1)) else {
            continue;
        };
        if name.is_empty() || state.is_empty() {
            continue;
        }
        if default_only && !row.get(2).is_some_and(|p| p.ends_with('*')) {
            continue;
        }
        nodes.insert(name, state);
    }
    if nodes.is_empty() {
        return None;
    }
    let mut usable = 0u32;
    let mut bad = Vec::new();
    for (name, state) in nodes {
        if unusable(state) {
            bad.push((name.to_string(), state.to_string()));
        } else {
            usable += 1;
        }
    }
    (usable < needed).then_some(TooFewNodes {
        needed,
        usable,
        unusable: bad,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::test_support::fixture;

    #[test]
    fn the_reasons_that_ask_for_a_look() {
        for name in [
            "state_pending_reqnodenotavail_recorded",
            "state_pending_reqnodenotavail",
            "state_pending_nodes_drained_recorded",
        ] {
            let out = fixture("slurm", name);
            let state = crate::scheduler::Kind::Slurm
                .scheduler()
                .parse_state(&out)
                .unwrap();
            let Some(crate::scheduler::JobState::Queued {
                reason: Some(reason),
                ..
            }) = state
            else {
                panic!("{name}: {state:?}")
            };
            assert!(nodes_unavailable(&reason), "{name}: {reason}");
            assert!(
                crate::scheduler::never_starts(&reason).is_none(),
                "{name}: waited on only after a look at the nodes"
            );
        }
        assert!(!nodes_unavailable("Resources"));
        assert!(!nodes_unavailable("Priority"));
        assert!(!nodes_unavailable("PartitionNodeLimit"));
    }

    #[test]
    fn the_command() {
        assert_eq!(
            crate::quote::join(slurm_nodes_command(Some("debug"))).unwrap(),
            "sinfo -h -N -p debug -o '%N|%t'"
        );
        assert_eq!(
            crate::quote::join(slurm_nodes_command(None)).unwrap(),
            "sinfo -h -N -o '%N|%t|%P'"
        );
    }

    #[test]
    fn a_drained_node_of_two_leaves_too_few_for_two() {
        let out = fixture("slurm", "nodes_one_drained");
        let verdict = too_few_nodes(&out.stdout, 2).expect("too few");
        assert_eq!(verdict.usable, 1);
        assert_eq!(verdict.unusable, vec![("node2".into(), "drain".into())]);
        assert_eq!(
            verdict.to_string(),
            "the job needs 2 nodes, the partition has 1 usable of 2 (node2 drained)"
        );
        assert_eq!(too_few_nodes(&out.stdout, 1), None, "one node is enough");
    }

    #[test]
    fn busy_reserved_and_unresponsive_nodes_may_still_run_it() {
        let out = fixture("slurm", "nodes_busy");
        assert_eq!(too_few_nodes(&out.stdout, 4), None);
        let verdict = too_few_nodes(&out.stdout, 5).unwrap();
        assert_eq!(verdict.usable, 4);
        assert_eq!(
            verdict.to_string(),
            "the job needs 5 nodes, the partition has 4 usable of 6 (node5 down, node6 draining)"
        );
    }

    #[test]
    fn without_a_partition_the_default_ones_nodes_count() {
        let out = fixture("slurm", "nodes_default_partition");
        let verdict = too_few_nodes(&out.stdout, 2).unwrap();
        assert_eq!(verdict.usable, 1, "node3 is in another partition only");
        assert_eq!(verdict.unusable, vec![("node2".into(), "down*".into())]);
    }

    #[test]
    fn nothing_listed_says_nothing() {
        assert_eq!(too_few_nodes("", 2), None);
        assert_eq!(too_few_nodes("garbage\n", 2), None);
    }

    #[test]
    fn node_states() {
        for s in [
            "drain", "drng", "down", "down*", "DRAIN", "fail", "futr", "inval", "drain$",
        ] {
            assert!(unusable(s), "{s}");
        }
        for s in [
            "idle", "alloc", "mix", "comp", "resv", "maint", "idle*", "idle~", "plnd",
        ] {
            assert!(!unusable(s), "{s}");
        }
    }
}
