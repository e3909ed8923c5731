//! The user's pvlaunch jobs as Slurm lists them, for `pvlaunch sessions`: every job whose queue
//! name ends with a session tag (`NAME-TAG`, [`super::queue_name`]), with its state, nodes and
//! wall time left.

use serde::Serialize;

/// `squeue` for this user's jobs: `ID|STATE|NAME|NODES|TIME_LEFT|NODELIST` per line. The name
/// is the third field, and may itself hold `|`: the parser reads the fixed fields from both
/// ends.
pub fn slurm_listing_command() -> Vec<String> {
    [
        "sh",
        "-c",
        r#"exec squeue -h -u "$(id -un)" -o '%i|%T|%j|%D|%L|%N'"#,
    ]
    .map(String::from)
    .to_vec()
}

/// One of the user's jobs that pvlaunch submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedJob {
    /// The job's id.
    pub id: String,
    /// Its state (`PENDING`, `RUNNING`, ...).
    pub state: String,
    /// The queue name (`NAME-TAG`).
    pub name: String,
    /// The session's tag at the end of the name.
    pub tag: String,
    /// How many nodes.
    pub nodes: u32,
    /// Wall time left as Slurm prints it (`1:23:45`, `2-00:00:00`, `UNLIMITED`, `INVALID`).
    pub time_left: String,
    /// The node list as printed (empty while queued).
    pub node_list: String,
}

/// The session tag a queue name ends with: `-` and 8 lowercase hex digits (what pvlaunch
/// draws).
pub fn tag_of(name: &str) -> Option<&str> {
    let (_, tag) = name.rsplit_once('-')?;
    (tag.len() == 8
        && tag
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(tag)
}

/// The pvlaunch jobs in [`slurm_listing_command`]'s output (other jobs and lines of another
/// shape are left out).
pub fn parse_slurm_listing(text: &str) -> Vec<ListedJob> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let (id, rest) = line.split_once('|')?;
            let (state, rest) = rest.split_once('|')?;
            let (rest, node_list) = rest.rsplit_once('|')?;
            let (rest, time_left) = rest.rsplit_once('|')?;
            let (name, nodes) = rest.rsplit_once('|')?;
            let tag = tag_of(name)?.to_string();
            Some(ListedJob {
                id: id.trim().to_string(),
                state: state.trim().to_string(),
                name: name.to_string(),
                tag,
                nodes: nodes.trim().parse().ok()?,
                time_left: time_left.trim().to_string(),
                node_list: node_list.trim().to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::test_support::fixture;

    #[test]
    fn only_jobs_named_with_a_tag_are_listed_with_their_columns() {
        let out = fixture("slurm", "listing_sessions");
        let jobs = parse_slurm_listing(&out.stdout);
        assert_eq!(
            jobs,
            vec![
                ListedJob {
                    id: "12".into(),
                    state: "RUNNING".into(),
                    name: "pvserver-1a2b3c4d".into(),
                    tag: "1a2b3c4d".into(),
                    nodes: 2,
                    time_left: "1:58:03".into(),
                    node_list: "node[1-2]".into(),
                },
                ListedJob {
                    id: "13".into(),
                    state: "PENDING".into(),
                    name: "with|bar-0badcafe".into(),
                    tag: "0badcafe".into(),
                    nodes: 1,
                    time_left: "2:00:00".into(),
                    node_list: String::new(),
                },
            ]
        );
    }

    #[test]
    fn tags() {
        assert_eq!(tag_of("pvserver-1a2b3c4d"), Some("1a2b3c4d"));
        assert_eq!(tag_of("pvserver-1A2B3C4D"), None);
        assert_eq!(tag_of("x1a2b3c4d"), None);
        assert_eq!(tag_of("pvserver-1a2b3c4"), None);
        assert_eq!(
            crate::quote::join(slurm_listing_command()).unwrap(),
            r#"sh -c 'exec squeue -h -u "$(id -un)" -o '\''%i|%T|%j|%D|%L|%N'\'''"#
        );
    }
}
