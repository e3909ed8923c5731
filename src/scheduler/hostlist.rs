//! Host lists as schedulers print them, expanded to one name per node.
//!
//! - Slurm's compressed lists: `node[1-3,7],gpu[01-02]`, zero padding kept (`[08-10]` gives
//!   `08 09 10`), several bracket groups in one name (`r[1-2]n[1-2]`), commas both between
//!   names and inside brackets.
//! - PBS `exec_host`: `n1/0*4+n2/1` (OpenPBS) and `n1/0-3+n2/0` (Torque): hosts joined by `+`,
//!   each followed by `/` and its CPU slots.
//! - LSF `exec_host`: `4*n1:2*n2` or `n1:n1:n2`: one entry per slot, optionally run-length
//!   encoded with `N*`.
//!
//! Every function returns each node once, in the order the scheduler listed them (the first
//! node is where rank 0 and the batch script run).

use thiserror::Error;

/// The most names one list may expand to: a guard against `node[0-999999999]`.
pub const MAX_HOSTS: usize = 65_536;

/// A host list that could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HostlistError {
    /// A `[` without its `]`, a `]` without its `[`, or brackets inside brackets.
    #[error("unbalanced brackets in host list {0:?}")]
    Brackets(String),
    /// Something inside brackets that is not `N` or `N-M`.
    #[error("invalid range {range:?} in host list {list:?}")]
    Range {
        /// The bad range.
        range: String,
        /// The whole list.
        list: String,
    },
    /// The list names more than [`MAX_HOSTS`] nodes.
    #[error("host list {0:?} expands to more than {MAX_HOSTS} names")]
    TooLarge(String),
    /// An empty name where a host was expected (`a,,b`, `n1/0++n2`).
    #[error("empty host name in list {0:?}")]
    EmptyName(String),
}

/// Expand a Slurm host list (`squeue %N`, `sacct NodeList`, `SLURM_JOB_NODELIST`).
///
/// An empty list, and Slurm's `None assigned` / `(null)`, give no nodes.
///
/// ```
/// use pvlaunch::scheduler::hostlist::expand_slurm;
/// assert_eq!(
///     expand_slurm("node[1-3,7],gpu[01-02]").unwrap(),
///     ["node1", "node2", "node3", "node7", "gpu01", "gpu02"]
/// );
/// ```
pub fn expand_slurm(list: &str) -> Result<Vec<String>, HostlistError> {
    let list = list.trim();
    if list.is_empty() || list == "None assigned" || list == "(null)" {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for item in split_top_level(list)? {
        if item.is_empty() {
            return Err(HostlistError::EmptyName(list.to_owned()));
        }
        let mut names = vec![String::new()];
        let mut rest = item;
        while !rest.is_empty() {
            match rest.find('[') {
                None => {
                    for name in &mut names {
                        name.push_str(rest);
                    }
                    rest = "";
                }
                Some(open) => {
                    let literal = &rest[..open];
                    let close = rest[open..]
                        .find(']')
                        .map(|i| open + i)
                        .ok_or_else(|| HostlistError::Brackets(list.to_owned()))?;
                    let inner = &rest[open + 1..close];
                    let numbers = expand_ranges(inner, list)?;
                    if names.len().saturating_mul(numbers.len()) + out.len() > MAX_HOSTS {
                        return Err(HostlistError::TooLarge(list.to_owned()));
                    }
                    let mut next = Vec::with_capacity(names.len() * numbers.len());
                    for name in &names {
                        for number in &numbers {
                            next.push(format!("{name}{literal}{number}"));
                        }
                    }
                    names = next;
                    rest = &rest[close + 1..];
                }
            }
        }
        out.extend(names);
    }
    Ok(dedup(out))
}

/// Split at commas outside brackets; check brackets are balanced and not nested.
fn split_top_level(list: &str) -> Result<Vec<&str>, HostlistError> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in list.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            ']' if depth == 1 => depth = 0,
            '[' | ']' => return Err(HostlistError::Brackets(list.to_owned())),
            ',' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(HostlistError::Brackets(list.to_owned()));
    }
    items.push(&list[start..]);
    Ok(items.into_iter().map(str::trim).collect())
}

/// `1-3,7` -> `1 2 3 7`; `08-10` -> `08 09 10` (the width of the lower bound is kept).
fn expand_ranges(inner: &str, list: &str) -> Result<Vec<String>, HostlistError> {
    let bad = |range: &str| HostlistError::Range {
        range: range.to_owned(),
        list: list.to_owned(),
    };
    let mut out = Vec::new();
    for range in inner.split(',') {
        let range = range.trim();
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(lo) || !digits(hi) {
            return Err(bad(range));
        }
        let width = lo.len();
        let (a, b): (u64, u64) = (
            lo.parse().map_err(|_| bad(range))?,
            hi.parse().map_err(|_| bad(range))?,
        );
        if a > b {
            return Err(bad(range));
        }
        if (b - a) as usize >= MAX_HOSTS || out.len() + (b - a) as usize >= MAX_HOSTS {
            return Err(HostlistError::TooLarge(list.to_owned()));
        }
        out.extend((a..=b).map(|n| format!("{n:0width$}")));
    }
    Ok(out)
}

/// Expand a PBS `exec_host`: `n1/0*4+n2/1` or Torque's `n1/0-3+n1/4+n2/0` -> `n1 n2`.
///
/// ```
/// use pvlaunch::scheduler::hostlist::expand_pbs_exec_host;
/// assert_eq!(expand_pbs_exec_host("n1/0*4+n2/1").unwrap(), ["n1", "n2"]);
/// ```
pub fn expand_pbs_exec_host(exec_host: &str) -> Result<Vec<String>, HostlistError> {
    let exec_host = exec_host.trim();
    if exec_host.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for chunk in exec_host.split('+') {
        let host = chunk.split('/').next().unwrap_or("").trim();
        if host.is_empty() {
            return Err(HostlistError::EmptyName(exec_host.to_owned()));
        }
        out.push(host.to_owned());
    }
    Ok(dedup(out))
}

/// Expand an LSF `exec_host`: `4*n1:2*n2` or `n1:n1:n2` (or a mix) -> `n1 n2`.
///
/// LSF prints `-` for "no host"; that gives no nodes.
///
/// ```
/// use pvlaunch::scheduler::hostlist::expand_lsf_exec_host;
/// assert_eq!(expand_lsf_exec_host("4*n1:2*n2").unwrap(), ["n1", "n2"]);
/// ```
pub fn expand_lsf_exec_host(exec_host: &str) -> Result<Vec<String>, HostlistError> {
    let exec_host = exec_host.trim();
    if exec_host.is_empty() || exec_host == "-" {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in exec_host.split(':') {
        let host = match entry.split_once('*') {
            Some((count, host))
                if !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()) =>
            {
                host
            }
            _ => entry,
        }
        .trim();
        if host.is_empty() {
            return Err(HostlistError::EmptyName(exec_host.to_owned()));
        }
        out.push(host.to_owned());
    }
    Ok(dedup(out))
}

/// Drop repeated names, keeping the first occurrence and the order.
fn dedup(names: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    names
        .into_iter()
        .filter(|n| seen.insert(n.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_plain_names() {
        assert_eq!(expand_slurm("node1").unwrap(), ["node1"]);
        assert_eq!(expand_slurm("node1,node2").unwrap(), ["node1", "node2"]);
        assert!(expand_slurm("").unwrap().is_empty());
        assert!(expand_slurm("None assigned").unwrap().is_empty());
    }

    #[test]
    fn slurm_ranges_and_nested_commas() {
        assert_eq!(
            expand_slurm("node[1-3,7],gpu[01-02]").unwrap(),
            ["node1", "node2", "node3", "node7", "gpu01", "gpu02"]
        );
        assert_eq!(expand_slurm("node[1-2]").unwrap(), ["node1", "node2"]);
        assert_eq!(expand_slurm("n[5]").unwrap(), ["n5"]);
    }

    #[test]
    fn slurm_zero_padding() {
        assert_eq!(expand_slurm("c[08-10]").unwrap(), ["c08", "c09", "c10"]);
        assert_eq!(expand_slurm("c[8-10]").unwrap(), ["c8", "c9", "c10"]);
        assert_eq!(
            expand_slurm("c[098-101]").unwrap(),
            ["c098", "c099", "c100", "c101"]
        );
        assert_eq!(expand_slurm("c[0001]").unwrap(), ["c0001"]);
    }

    #[test]
    fn slurm_several_groups_and_suffixes() {
        assert_eq!(
            expand_slurm("r[1-2]n[01-02]").unwrap(),
            ["r1n01", "r1n02", "r2n01", "r2n02"]
        );
        assert_eq!(
            expand_slurm("node[1-2]-ib,login").unwrap(),
            ["node1-ib", "node2-ib", "login"]
        );
        assert_eq!(
            expand_slurm("nid[001-002].cluster.example").unwrap(),
            ["nid001.cluster.example", "nid002.cluster.example"]
        );
    }

    #[test]
    fn slurm_duplicates_dropped_in_order() {
        assert_eq!(expand_slurm("b,a,b,a[1]").unwrap(), ["b", "a", "a1"]);
    }

    #[test]
    fn slurm_errors() {
        assert!(matches!(
            expand_slurm("node[1-3"),
            Err(HostlistError::Brackets(_))
        ));
        assert!(matches!(
            expand_slurm("node1-3]"),
            Err(HostlistError::Brackets(_))
        ));
        assert!(matches!(
            expand_slurm("n[[1]]"),
            Err(HostlistError::Brackets(_))
        ));
        assert!(matches!(
            expand_slurm("n[3-1]"),
            Err(HostlistError::Range { .. })
        ));
        assert!(matches!(
            expand_slurm("n[a-b]"),
            Err(HostlistError::Range { .. })
        ));
        assert!(matches!(
            expand_slurm("n[]"),
            Err(HostlistError::Range { .. })
        ));
        assert!(matches!(
            expand_slurm("n[1-]"),
            Err(HostlistError::Range { .. })
        ));
        assert!(matches!(
            expand_slurm("a,,b"),
            Err(HostlistError::EmptyName(_))
        ));
        assert!(matches!(
            expand_slurm("n[0-999999999]"),
            Err(HostlistError::TooLarge(_))
        ));
        assert!(matches!(
            expand_slurm("a[0-999]b[0-999]"),
            Err(HostlistError::TooLarge(_))
        ));
        assert!(matches!(
            expand_slurm("n[99999999999999999999]"),
            Err(HostlistError::Range { .. })
        ));
    }

    #[test]
    fn pbs_forms() {
        assert_eq!(expand_pbs_exec_host("n1/0*4+n2/1").unwrap(), ["n1", "n2"]);
        assert_eq!(expand_pbs_exec_host("n003/0-1").unwrap(), ["n003"]);
        assert_eq!(
            expand_pbs_exec_host("n1/0+n1/1+n2/0+n2/1").unwrap(),
            ["n1", "n2"]
        );
        assert_eq!(
            expand_pbs_exec_host("cn01.example.org/0*8").unwrap(),
            ["cn01.example.org"]
        );
        assert!(expand_pbs_exec_host("").unwrap().is_empty());
        assert!(expand_pbs_exec_host("n1/0++n2/0").is_err());
    }

    #[test]
    fn lsf_forms() {
        assert_eq!(expand_lsf_exec_host("4*n1:2*n2").unwrap(), ["n1", "n2"]);
        assert_eq!(expand_lsf_exec_host("n1:n1:n2").unwrap(), ["n1", "n2"]);
        assert_eq!(expand_lsf_exec_host("2*n1:n2:n2").unwrap(), ["n1", "n2"]);
        assert_eq!(expand_lsf_exec_host("hostA").unwrap(), ["hostA"]);
        assert!(expand_lsf_exec_host("-").unwrap().is_empty());
        assert!(expand_lsf_exec_host("n1::n2").is_err());
    }
}
