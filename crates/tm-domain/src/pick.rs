//! How resolve chooses among a service's serving versions when no version is asked for:
//! by weight at random, or by weight and the same for the same key (weighted rendezvous
//! hashing). The server's snapshot and the client SDK's cache choose with these, so a
//! key sticks to the same version in both.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// A version's seed in the rendezvous hash: a hash of its name, computed once.
pub fn version_seed(version: &str) -> u64 {
    xxh3_64(version.as_bytes())
}

/// The score of the version with `seed` and `weight` for `key`: `weight / -ln(u)`, with
/// `u` a uniform hash of the key and the version in (0, 1). The highest score wins.
pub fn rendezvous_score(key: &str, seed: u64, weight: u8) -> f64 {
    let h = xxh3_64_with_seed(key.as_bytes(), seed);
    // 53 high bits into (0, 1): never 0, never 1.
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

/// The candidate `key` sticks to: the highest rendezvous score among `candidates`
/// (each with its version's seed and weight). The same key picks the same version
/// wherever it is asked, and a weight change moves keys only to or from that version.
/// `None` when there is no candidate; a candidate of weight 0 is never picked unless
/// every one weighs 0.
pub fn sticky<T>(key: &str, candidates: impl IntoIterator<Item = (T, u64, u8)>) -> Option<T> {
    let mut best: Option<(f64, T)> = None;
    for (candidate, seed, weight) in candidates {
        let score = rendezvous_score(key, seed, weight);
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// The candidate at point `n` (a random number) of the candidates laid end to end, each
/// as long as its weight: each is picked in proportion to its weight. `candidates` is
/// gone through twice (the total, then the pick), without collecting it. `None` when
/// the weights add up to 0.
pub fn weighted<T, I>(n: u64, candidates: impl Fn() -> I) -> Option<T>
where
    I: Iterator<Item = (T, u8)>,
{
    let total: u64 = candidates().map(|(_, w)| u64::from(w)).sum();
    if total == 0 {
        return None;
    }
    let mut point = n % total;
    for (candidate, weight) in candidates() {
        let w = u64::from(weight);
        if point < w {
            return Some(candidate);
        }
        point -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions() -> Vec<(&'static str, u64, u8)> {
        [("v1", 90), ("v2", 10)]
            .into_iter()
            .map(|(v, w)| (v, version_seed(v), w))
            .collect()
    }

    #[test]
    fn sticky_keys_follow_the_weights_and_stay_put() {
        let picks: Vec<&str> = (0..10_000)
            .map(|i| sticky(&format!("user-{i}"), versions()).expect("a pick"))
            .collect();
        let to_v2 = picks.iter().filter(|v| **v == "v2").count();
        assert!(
            (800..1200).contains(&to_v2),
            "{to_v2} of 10,000 to a 10 % version"
        );
        for (i, first) in picks.iter().enumerate().take(100) {
            assert_eq!(sticky(&format!("user-{i}"), versions()), Some(*first));
        }
        assert_eq!(sticky::<&str>("k", Vec::new()), None);
    }

    #[test]
    fn weighted_picks_in_proportion_and_never_a_weightless_one() {
        let candidates = [("a", 1u8), ("b", 0), ("c", 3)];
        let picks: Vec<&str> = (0..4)
            .map(|n| weighted(n, || candidates.into_iter()).expect("a pick"))
            .collect();
        assert_eq!(picks, ["a", "c", "c", "c"]);
        assert_eq!(weighted(7, || [("a", 0u8)].into_iter()), None);
    }
}
