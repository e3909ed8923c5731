//! "Did you mean ...?" for near misses, by edit distance.

/// The candidates closest to `wanted`, best first (at most three), if any is close enough.
pub fn nearest<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let lower = wanted.to_lowercase();
    let mut scored: Vec<(usize, &str)> = candidates
        .into_iter()
        .filter_map(|c| {
            let distance = strsim::levenshtein(&lower, &c.to_lowercase());
            let limit = (wanted.chars().count().max(c.chars().count()) / 3).max(2);
            let prefix = !lower.is_empty() && c.to_lowercase().starts_with(&lower);
            (distance <= limit || prefix).then_some((distance, c))
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    // Only the closest ones: a clear best match is worth more than a list.
    let best = scored.first().map_or(0, |s| s.0);
    scored
        .into_iter()
        .take_while(|s| s.0 == best)
        .take(3)
        .map(|(_, c)| c)
        .collect()
}

/// A hint sentence such as "did you mean `cluster-a`?", or None.
pub fn did_you_mean<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    wrap: impl Fn(&str) -> String,
) -> Option<String> {
    let near = nearest(wanted, candidates);
    match near.as_slice() {
        [] => None,
        [one] => Some(format!("did you mean {}?", wrap(one))),
        many => Some(format!(
            "did you mean one of {}?",
            many.iter().map(|c| wrap(c)).collect::<Vec<_>>().join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_near_misses_only() {
        assert_eq!(
            nearest("cluster-b", ["cluster-a", "laptop", "frontier"]),
            vec!["cluster-a"]
        );
        assert!(nearest("zzz", ["cluster-a", "laptop"]).is_empty());
        assert_eq!(
            nearest("nodez", ["nodes", "name", "account"]),
            vec!["nodes"]
        );
    }

    #[test]
    fn hint_wording() {
        assert_eq!(
            did_you_mean("nodez", ["nodes"], |c| format!("`{c}`")).as_deref(),
            Some("did you mean `nodes`?")
        );
    }
}
