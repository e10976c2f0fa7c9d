//! How resolve chooses among a service's active versions once their health is known:
//! the service's resolve policy and failover chain, and the one decision that applies
//! them, made when the service's group is built (resolve only reads its outcome).
//!
//! The decision, for the versions with a weight above 0 (the candidates):
//!
//! 1. The failover chain orders the candidates in tiers: those its first tier names,
//!    then its second's, …, and last every version the chain does not name. The first
//!    tier holding at least its `min_healthy` healthy candidates serves, its healthy
//!    candidates by weight.
//! 2. If none does, the first tier with any healthy candidate serves them.
//! 3. If no candidate is healthy, the policy decides: `healthy_only` serves nothing;
//!    `healthy_or_all` serves every candidate of the first tier that has any (fail
//!    open); `last_known_good` serves the candidates seen healthy most recently (or, if
//!    none ever was, as `healthy_or_all`).
//!
//! A weight-0 version is never a candidate, and an unhealthy one is never served while a
//! healthy one can be. A version whose health is not checked counts as healthy.

use serde::{Deserialize, Serialize};

use crate::{DomainError, Version};

/// The most tiers a failover chain may have.
pub const MAX_TIERS: usize = 8;

/// The most versions one tier may name.
pub const MAX_TIER_VERSIONS: usize = 64;

/// What resolve serves when no candidate is healthy.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ResolvePolicy {
    /// Nothing: resolve answers 503.
    HealthyOnly,
    /// Every candidate of the first tier that has any (fail open).
    #[default]
    HealthyOrAll,
    /// The candidates seen healthy most recently.
    LastKnownGood,
}

impl ResolvePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HealthyOnly => "healthy_only",
            Self::HealthyOrAll => "healthy_or_all",
            Self::LastKnownGood => "last_known_good",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Self::HealthyOnly => 0,
            Self::HealthyOrAll => 1,
            Self::LastKnownGood => 2,
        }
    }

    pub(crate) fn from_code(code: u8) -> Self {
        match code {
            0 => Self::HealthyOnly,
            2 => Self::LastKnownGood,
            _ => Self::HealthyOrAll,
        }
    }
}

/// One step of a failover chain: versions served together while at least `min_healthy`
/// of them are healthy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverTier {
    pub versions: Vec<Version>,
    pub min_healthy: u8,
}

/// How a probe checks an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProbeProtocol {
    Http,
    Https,
    /// A TCP connection to the route URL's host and port.
    Tcp,
}

/// A route's health as its checks found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Its probes pass, or fail no more often in a row than its check tolerates.
    Online,
    /// More of its probes failed in a row than its check tolerates: not served while a
    /// healthy version can be.
    Degraded,
    /// Not checked (any more): the route is inactive, or its check was removed.
    Stopped,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Degraded => "degraded",
            Self::Stopped => "stopped",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Online, Self::Degraded, Self::Stopped]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// A range of HTTP statuses that count as healthy, written `200-299` or `204`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StatusRange {
    pub first: u16,
    pub last: u16,
}

impl StatusRange {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let bad = || {
            DomainError::invalid(
                "a status range is `200-299` or one status like `204`, from 100 to 599",
            )
        };
        let (first, last) = match raw.split_once('-') {
            Some((a, b)) => (a, b),
            None => (raw, raw),
        };
        let status = |s: &str| {
            s.parse::<u16>()
                .ok()
                .filter(|n| (100..=599).contains(n) && s.len() == 3)
        };
        match (status(first), status(last)) {
            (Some(first), Some(last)) if first <= last => Ok(Self { first, last }),
            _ => Err(bad()),
        }
    }

    pub fn contains(&self, status: u16) -> bool {
        (self.first..=self.last).contains(&status)
    }
}

impl TryFrom<String> for StatusRange {
    type Error = DomainError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<StatusRange> for String {
    fn from(range: StatusRange) -> Self {
        if range.first == range.last {
            range.first.to_string()
        } else {
            format!("{}-{}", range.first, range.last)
        }
    }
}

/// How a route's health is checked: a probe every `interval_seconds`, each given
/// `timeout_seconds`; the route is degraded after more than `tolerated_failures` probes
/// in a row fail, and online again at the first that passes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub protocol: ProbeProtocol,
    /// For HTTP(S): the path (and query) to GET, starting with `/`.
    pub path: String,
    /// For HTTP(S): the statuses that count as healthy.
    pub expected_status: Vec<StatusRange>,
    pub interval_seconds: u32,
    pub timeout_seconds: u32,
    pub tolerated_failures: u32,
}

/// The bounds of a health check's settings.
pub const MIN_PROBE_INTERVAL_SECONDS: u32 = 1;
pub const MAX_PROBE_INTERVAL_SECONDS: u32 = 3600;
pub const MAX_PROBE_TIMEOUT_SECONDS: u32 = 60;
pub const MAX_TOLERATED_FAILURES: u32 = 10;

impl HealthCheck {
    /// Checks the settings: a path starting with `/` of at most 512 characters without
    /// spaces or control characters, 1 to 10 status ranges (for HTTP(S)), an interval of
    /// 1 to 3600 s, a timeout of 1 to 60 s and shorter than the interval (or equal to it at
    /// 1 s), at most 10 tolerated failures.
    pub fn check(&self) -> Result<(), DomainError> {
        let bad = |why: &str| Err(DomainError::invalid(why.to_owned()));
        if self.protocol != ProbeProtocol::Tcp {
            if !self.path.starts_with('/')
                || self.path.chars().count() > 512
                || self
                    .path
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() || c == '#')
            {
                return bad("path must start with / and hold at most 512 characters, no spaces, control characters or #");
            }
            if self.expected_status.is_empty() || self.expected_status.len() > 10 {
                return bad("expected_status must hold 1 to 10 status ranges");
            }
        }
        if !(MIN_PROBE_INTERVAL_SECONDS..=MAX_PROBE_INTERVAL_SECONDS)
            .contains(&self.interval_seconds)
        {
            return bad("interval_seconds must be from 1 to 3600");
        }
        if self.timeout_seconds == 0
            || self.timeout_seconds > MAX_PROBE_TIMEOUT_SECONDS
            || (self.timeout_seconds > self.interval_seconds)
        {
            return bad("timeout_seconds must be from 1 to 60 and at most interval_seconds");
        }
        if self.tolerated_failures > MAX_TOLERATED_FAILURES {
            return bad("tolerated_failures must be from 0 to 10");
        }
        Ok(())
    }
}

/// A service's routing policy: how it fails over, what it serves when nothing is
/// healthy, and how its routes' health is checked. The default (no chain,
/// `healthy_or_all`, no checks) serves every candidate by weight.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePolicy {
    pub resolve: ResolvePolicy,
    pub failover: Vec<FailoverTier>,
    /// The check of every version of the service, unless `version_checks` says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Per version: its own check, or none (`None`: not checked).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub version_checks: std::collections::BTreeMap<Version, Option<HealthCheck>>,
}

impl ServicePolicy {
    /// The check of `version`, if its health is checked.
    pub fn check_of(&self, version: &str) -> Option<&HealthCheck> {
        match self
            .version_checks
            .iter()
            .find(|(v, _)| v.as_str() == version)
        {
            Some((_, own)) => own.as_ref(),
            None => self.health_check.as_ref(),
        }
    }

    /// Whether any version's health is checked.
    pub fn checks_health(&self) -> bool {
        self.health_check.is_some() || self.version_checks.values().any(Option::is_some)
    }

    /// This policy with every part checked (see [`Self::new`] and [`HealthCheck::check`]).
    pub fn checked(self) -> Result<Self, DomainError> {
        let Self {
            resolve,
            failover,
            health_check,
            version_checks,
        } = self;
        if let Some(check) = &health_check {
            check.check()?;
        }
        if version_checks.len() > MAX_TIER_VERSIONS {
            return Err(DomainError::invalid(format!(
                "at most {MAX_TIER_VERSIONS} versions may have checks of their own"
            )));
        }
        for check in version_checks.values().flatten() {
            check.check()?;
        }
        let mut policy = Self::new(resolve, failover)?;
        policy.health_check = health_check;
        policy.version_checks = version_checks;
        Ok(policy)
    }

    /// A policy with its chain checked: at most [`MAX_TIERS`] tiers, each naming 1 to
    /// [`MAX_TIER_VERSIONS`] versions, no version named twice, `min_healthy` from 1 to the
    /// number of versions the tier names.
    pub fn new(resolve: ResolvePolicy, failover: Vec<FailoverTier>) -> Result<Self, DomainError> {
        if failover.len() > MAX_TIERS {
            return Err(DomainError::invalid(format!(
                "a failover chain has at most {MAX_TIERS} tiers"
            )));
        }
        let mut seen: Vec<&Version> = Vec::new();
        for (i, tier) in failover.iter().enumerate() {
            if tier.versions.is_empty() || tier.versions.len() > MAX_TIER_VERSIONS {
                return Err(DomainError::invalid(format!(
                    "tier {i} must name 1 to {MAX_TIER_VERSIONS} versions"
                )));
            }
            if tier.min_healthy == 0 || usize::from(tier.min_healthy) > tier.versions.len() {
                return Err(DomainError::invalid(format!(
                    "tier {i}: min_healthy must be from 1 to the number of versions it names"
                )));
            }
            for version in &tier.versions {
                if seen.contains(&version) {
                    return Err(DomainError::invalid(format!(
                        "version {version} is named twice in the failover chain"
                    )));
                }
                seen.push(version);
            }
        }
        Ok(Self {
            resolve,
            failover,
            ..Self::default()
        })
    }

    /// The tier `version` belongs to: the index of the tier naming it, or, for a version
    /// the chain does not name, the tier after the last.
    pub fn tier_of(&self, version: &str) -> u8 {
        let index = self
            .failover
            .iter()
            .position(|tier| tier.versions.iter().any(|v| v.as_str() == version))
            .unwrap_or(self.failover.len());
        u8::try_from(index).expect("a chain has at most 8 tiers")
    }

    /// The fewest healthy candidates tier `tier` needs to serve (1 for the unnamed rest).
    pub fn min_healthy(&self, tier: u8) -> u8 {
        self.failover
            .get(usize::from(tier))
            .map_or(1, |t| t.min_healthy)
    }
}

/// What the decision needs of one active version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub weight: u8,
    pub healthy: bool,
    pub tier: u8,
    /// When it was last seen healthy (Unix seconds; 0: never, or not checked).
    pub last_healthy: u32,
}

/// Which versions serve, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No version has a weight above 0.
    NoCandidates,
    /// The first tier with at least its minimum of healthy candidates: its healthy ones.
    Tier(u8),
    /// No tier has its minimum: the healthy candidates of the first tier that has any.
    BelowMinimum(u8),
    /// Nothing is healthy and the policy is `healthy_only`: nothing serves.
    NoneHealthy,
    /// Nothing is healthy: every candidate of this tier (`healthy_or_all`, or
    /// `last_known_good` when none was ever seen healthy).
    FailOpen(u8),
    /// Nothing is healthy: the candidates last seen healthy, at this time.
    LastKnownGood(u32),
}

impl Outcome {
    /// How explain names it.
    pub fn describe(self) -> String {
        match self {
            Self::NoCandidates => "no active version has a weight above 0".into(),
            Self::Tier(tier) => format!("tier {tier} has its minimum of healthy versions"),
            Self::BelowMinimum(tier) => format!(
                "no tier has its minimum of healthy versions: the healthy ones of tier {tier}"
            ),
            Self::NoneHealthy => "no version is healthy and the policy is healthy_only".into(),
            Self::FailOpen(tier) => format!("no version is healthy: every version of tier {tier}"),
            Self::LastKnownGood(at) => {
                format!("no version is healthy: those last seen healthy (at {at})")
            }
        }
    }
}

/// Applies the policy `resolve`, with `min_healthy` giving each tier's minimum, to
/// `candidates` (one per active version, weight-0 ones included): the outcome, and for
/// each candidate whether it serves.
pub fn decide(
    candidates: &[Candidate],
    resolve: ResolvePolicy,
    min_healthy: impl Fn(u8) -> u8,
) -> (Outcome, Vec<bool>) {
    let weighted = |c: &Candidate| c.weight > 0;
    let serving = |pass: &dyn Fn(&Candidate) -> bool| -> Vec<bool> {
        candidates.iter().map(|c| weighted(c) && pass(c)).collect()
    };
    let mut tiers: Vec<u8> = candidates
        .iter()
        .filter(|c| weighted(c))
        .map(|c| c.tier)
        .collect();
    tiers.sort_unstable();
    tiers.dedup();
    let Some(&first) = tiers.first() else {
        return (Outcome::NoCandidates, serving(&|_| false));
    };
    let healthy_in = |tier: u8| {
        candidates
            .iter()
            .filter(|c| weighted(c) && c.healthy && c.tier == tier)
            .count()
    };
    let healthy_of = |tier: u8| serving(&|c: &Candidate| c.healthy && c.tier == tier);
    if let Some(&tier) = tiers
        .iter()
        .find(|&&t| healthy_in(t) >= usize::from(min_healthy(t).max(1)))
    {
        return (Outcome::Tier(tier), healthy_of(tier));
    }
    if let Some(&tier) = tiers.iter().find(|&&t| healthy_in(t) > 0) {
        return (Outcome::BelowMinimum(tier), healthy_of(tier));
    }
    let fail_open = (
        Outcome::FailOpen(first),
        serving(&|c: &Candidate| c.tier == first),
    );
    match resolve {
        ResolvePolicy::HealthyOnly => (Outcome::NoneHealthy, serving(&|_| false)),
        ResolvePolicy::HealthyOrAll => fail_open,
        ResolvePolicy::LastKnownGood => {
            let latest = candidates
                .iter()
                .filter(|c| weighted(c))
                .map(|c| c.last_healthy)
                .max()
                .unwrap_or(0);
            if latest == 0 {
                return fail_open;
            }
            (
                Outcome::LastKnownGood(latest),
                serving(&|c: &Candidate| c.last_healthy == latest),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn c(weight: u8, healthy: bool, tier: u8) -> Candidate {
        Candidate {
            weight,
            healthy,
            tier,
            last_healthy: 0,
        }
    }

    fn one(_: u8) -> u8 {
        1
    }

    #[test]
    fn without_health_or_chain_every_weighted_version_serves() {
        let all = [c(50, true, 0), c(0, true, 0), c(50, true, 0)];
        assert_eq!(
            decide(&all, ResolvePolicy::default(), one),
            (Outcome::Tier(0), vec![true, false, true])
        );
        assert_eq!(
            decide(&[c(0, true, 0)], ResolvePolicy::HealthyOnly, one).0,
            Outcome::NoCandidates
        );
    }

    #[test]
    fn the_first_tier_with_its_minimum_serves_its_healthy_versions() {
        // Tier 0 needs two healthy: it has one, so tier 1 serves.
        let mins = |t: u8| if t == 0 { 2 } else { 1 };
        let versions = [
            c(100, true, 0),
            c(100, false, 0),
            c(100, true, 1),
            c(100, true, 2),
        ];
        assert_eq!(
            decide(&versions, ResolvePolicy::HealthyOnly, mins),
            (Outcome::Tier(1), vec![false, false, true, false])
        );
        // No tier has its minimum: the first with any healthy one.
        let mins = |_| 2;
        let versions = [c(100, false, 0), c(100, true, 1), c(100, false, 1)];
        assert_eq!(
            decide(&versions, ResolvePolicy::HealthyOnly, mins),
            (Outcome::BelowMinimum(1), vec![false, true, false])
        );
    }

    #[test]
    fn with_nothing_healthy_the_policy_decides() {
        let mut down = [c(100, false, 1), c(100, false, 2), c(0, false, 0)];
        assert_eq!(
            decide(&down, ResolvePolicy::HealthyOnly, one),
            (Outcome::NoneHealthy, vec![false, false, false])
        );
        assert_eq!(
            decide(&down, ResolvePolicy::HealthyOrAll, one),
            (Outcome::FailOpen(1), vec![true, false, false])
        );
        // Never seen healthy: as healthy_or_all.
        assert_eq!(
            decide(&down, ResolvePolicy::LastKnownGood, one).0,
            Outcome::FailOpen(1)
        );
        down[1].last_healthy = 2_000;
        down[0].last_healthy = 1_000;
        down[2].last_healthy = 3_000;
        assert_eq!(
            decide(&down, ResolvePolicy::LastKnownGood, one),
            (Outcome::LastKnownGood(2_000), vec![false, true, false])
        );
    }

    #[test]
    fn a_chain_is_checked() {
        let v = |s: &str| Version::parse(s).expect("valid");
        let tier = |versions: &[&str], min_healthy| FailoverTier {
            versions: versions.iter().map(|s| v(s)).collect(),
            min_healthy,
        };
        let policy = ServicePolicy::new(
            ResolvePolicy::LastKnownGood,
            vec![tier(&["blue", "blue-2"], 2), tier(&["green"], 1)],
        )
        .expect("valid");
        assert_eq!(
            (
                policy.tier_of("blue-2"),
                policy.tier_of("green"),
                policy.tier_of("red")
            ),
            (0, 1, 2)
        );
        assert_eq!((policy.min_healthy(0), policy.min_healthy(2)), (2, 1));
        for bad in [
            vec![tier(&[], 1)],
            vec![tier(&["a"], 0)],
            vec![tier(&["a"], 2)],
            vec![tier(&["a"], 1), tier(&["a"], 1)],
            (0..9).map(|i| tier(&[&format!("v{i}")], 1)).collect(),
        ] {
            assert!(ServicePolicy::new(ResolvePolicy::HealthyOnly, bad).is_err());
        }
    }

    fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
        proptest::collection::vec(
            (0u8..=3, any::<bool>(), 0u8..4, 0u32..4).prop_map(|(w, healthy, tier, seen)| {
                Candidate {
                    weight: w * 33,
                    healthy,
                    tier,
                    last_healthy: seen * 1000,
                }
            }),
            0..12,
        )
    }

    fn policies() -> impl Strategy<Value = ResolvePolicy> {
        prop_oneof![
            Just(ResolvePolicy::HealthyOnly),
            Just(ResolvePolicy::HealthyOrAll),
            Just(ResolvePolicy::LastKnownGood),
        ]
    }

    proptest! {
        /// A weight-0 version never serves; an unhealthy one never serves while a healthy
        /// candidate exists; something serves whenever a healthy candidate exists, or
        /// whenever any candidate exists and the policy is not healthy_only; and a tier
        /// serving by its minimum comes after no tier that had its own.
        #[test]
        fn the_decision_keeps_its_promises(
            versions in candidates(),
            resolve in policies(),
            mins in proptest::collection::vec(1u8..4, 5),
        ) {
            let min = |t: u8| mins[usize::from(t)];
            let (outcome, serving) = decide(&versions, resolve, min);
            prop_assert_eq!(serving.len(), versions.len());
            let weighted: Vec<&Candidate> = versions.iter().filter(|c| c.weight > 0).collect();
            let any_healthy = weighted.iter().any(|c| c.healthy);
            for (c, serves) in versions.iter().zip(&serving) {
                if *serves {
                    prop_assert!(c.weight > 0);
                    prop_assert!(c.healthy || !any_healthy);
                }
            }
            let serves_any = serving.iter().any(|s| *s);
            if any_healthy || (!weighted.is_empty() && resolve != ResolvePolicy::HealthyOnly) {
                prop_assert!(serves_any, "{:?}", outcome);
            }
            if resolve == ResolvePolicy::HealthyOnly && !any_healthy {
                prop_assert!(!serves_any);
            }
            if let Outcome::Tier(tier) = outcome {
                for earlier in 0..tier {
                    let healthy = weighted
                        .iter()
                        .filter(|c| c.tier == earlier && c.healthy)
                        .count();
                    prop_assert!(healthy < usize::from(min(earlier)));
                }
            }
            // Whatever serves is of one tier.
            let served_tiers: std::collections::HashSet<u8> = versions
                .iter()
                .zip(&serving)
                .filter(|(_, s)| **s)
                .map(|(c, _)| c.tier)
                .collect();
            prop_assert!(served_tiers.len() <= 1 || matches!(outcome, Outcome::LastKnownGood(_)));
        }
    }
}
