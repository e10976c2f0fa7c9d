//! The active versions of one `(tenant, service, env)`, as the routing snapshot keeps
//! them: packed, answers and all, into one allocation.
//!
//! A resolve at a million routes is bound by memory latency: every pointer it follows
//! is likely a cache miss. Packing a group's records and answers together means that,
//! once the index has found the group, one read brings in what the answer needs (the
//! record right before the answer, in neighbouring cache lines), and that the group
//! is recognised by the answer itself (see [`ActiveRoute::answers_for`]).
//!
//! Layout: a [`HEADER`] (the number of versions, the service's generation, its resolve
//! policy, the outcome of the policy's decision and each failover tier's minimum), then
//! one [`RECORD`]-byte record per version in version order (weight, hash seed, entity
//! tag, where the version sits in the answer, where the answer sits in the group and its
//! length, whether it serves and is healthy, its tier, when it was last seen healthy),
//! then the answers.
//!
//! Which versions serve is decided when the group is packed ([`crate::decide`]), so
//! resolve only reads one flag per version.

use std::sync::Arc;

use serde::Serialize;

use crate::index::Keyed;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::policy::{decide, Candidate, Outcome, ResolvePolicy, ServicePolicy, MAX_TIERS};
use crate::{
    EnvName, Route, RouteId, ServedRoute, ServiceName, TenantId, UpstreamUrl, Version, Weight,
};

const ETAG_LEN: usize = 18;

/// weight (1), seed (8), entity tag (18), version offset and length (1 + 1), answer
/// offset and length (4 + 4), flags (1), tier (1), last seen healthy (4), route id (16),
/// revision (8).
const RECORD: usize = 1 + 8 + ETAG_LEN + 2 + 8 + 1 + 1 + 4 + 16 + 8;

/// count (4), generation (8), resolve policy (1), outcome kind and tier (1 + 1), chain
/// length (1), outcome time (4), each tier's minimum (8), padding (4).
const HEADER: usize = 32;

const SERVES: u8 = 1;
const HEALTHY: u8 = 2;

/// What the snapshot knows of a route's health: whether it counts as healthy (a route
/// whose health is not checked does), and when it was last seen healthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    pub healthy: bool,
    /// Unix seconds; 0 when never seen healthy or not checked.
    pub last_healthy: u32,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            healthy: true,
            last_healthy: 0,
        }
    }
}

/// What the snapshot keeps of a service besides its routes: its generation (see the
/// store's `services` table) and its routing policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceFacts {
    pub generation: u64,
    pub policy: ServicePolicy,
}

/// Where each version of a group stands under the policy: its tier and each tier's
/// minimum. A group being packed again keeps the tiers its records hold (a version new
/// to it joins the chain's unnamed rest until the group is read from the store again).
pub(crate) trait Rules {
    fn resolve(&self) -> ResolvePolicy;
    fn tier_of(&self, version: &str) -> u8;
    fn min_healthy(&self, tier: u8) -> u8;
    /// The number of tiers the chain names.
    fn chain_len(&self) -> u8;
    /// The policy to keep with the group (none for the default).
    fn kept(&self) -> Option<Arc<ServicePolicy>>;
}

impl Rules for ServicePolicy {
    fn resolve(&self) -> ResolvePolicy {
        self.resolve
    }

    fn tier_of(&self, version: &str) -> u8 {
        ServicePolicy::tier_of(self, version)
    }

    fn min_healthy(&self, tier: u8) -> u8 {
        ServicePolicy::min_healthy(self, tier)
    }

    fn chain_len(&self) -> u8 {
        u8::try_from(self.failover.len()).expect("a chain has at most 8 tiers")
    }

    fn kept(&self) -> Option<Arc<ServicePolicy>> {
        (*self != ServicePolicy::default()).then(|| Arc::new(self.clone()))
    }
}

/// A group packed again keeps its policy (the default when it has none kept).
impl Rules for Group {
    fn resolve(&self) -> ResolvePolicy {
        self.policy()
    }

    fn tier_of(&self, version: &str) -> u8 {
        match &self.policy {
            Some(policy) => policy.tier_of(version),
            None => ServicePolicy::default().tier_of(version),
        }
    }

    fn min_healthy(&self, tier: u8) -> u8 {
        Group::min_healthy(self, tier)
    }

    fn chain_len(&self) -> u8 {
        self.packed[15]
    }

    fn kept(&self) -> Option<Arc<ServicePolicy>> {
        self.policy.clone()
    }
}

/// One active version, its answer prepared, before it is packed into its group.
#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    /// The JSON body of a resolve answer: `{"tenant","service","env","version","url"}`.
    body: Vec<u8>,
    version_at: u8,
    version_len: u8,
    weight: u8,
    /// The entity tag: a quoted 16-digit hex number.
    etag: [u8; ETAG_LEN],
    /// Per-version seed of the rendezvous hash.
    seed: u64,
    health: Health,
    id: RouteId,
    revision: i64,
}

/// What an answer is made of, borrowed from a [`Route`] or a [`ServedRoute`].
pub(crate) struct AnswerParts<'a> {
    pub id: RouteId,
    pub tenant: &'a TenantId,
    pub service: &'a ServiceName,
    pub env: &'a EnvName,
    pub version: &'a Version,
    pub url: &'a UpstreamUrl,
    pub weight: Weight,
    pub revision: i64,
    pub health: Health,
}

/// Both kinds of route name these fields alike.
macro_rules! answer_parts_of {
    ($route:ty, $health:expr) => {
        impl<'a> From<&'a $route> for AnswerParts<'a> {
            fn from(route: &'a $route) -> Self {
                Self {
                    id: route.id,
                    tenant: &route.tenant,
                    service: &route.service,
                    env: &route.env,
                    version: &route.version,
                    url: &route.url,
                    weight: route.weight,
                    revision: route.revision,
                    health: $health(route),
                }
            }
        }
    };
}

answer_parts_of!(Route, |_| Health::default());
answer_parts_of!(ServedRoute, |route: &ServedRoute| route.health);

impl Prepared {
    pub(crate) fn new(route: AnswerParts<'_>) -> Self {
        #[derive(Serialize)]
        struct Answer<'a> {
            tenant: &'a TenantId,
            service: &'a ServiceName,
            env: &'a EnvName,
            version: &'a Version,
            url: &'a UpstreamUrl,
        }
        let body = serde_json::to_vec(&Answer {
            tenant: route.tenant,
            service: route.service,
            env: route.env,
            version: route.version,
            url: route.url,
        })
        .expect("serializing strings cannot fail");
        // Identifiers need no escaping in JSON, so the version appears verbatim, once,
        // right after the tenant, service and env.
        let version = route.version.as_str();
        let version_at = br#"{"tenant":"","service":"","env":"","version":""#.len()
            + route.tenant.as_str().len()
            + route.service.as_str().len()
            + route.env.as_str().len();
        debug_assert_eq!(
            &body[version_at..version_at + version.len()],
            version.as_bytes()
        );
        // Route id and revision together identify the answer's content exactly.
        let tag = xxh3_64_with_seed(route.id.as_uuid().as_bytes(), route.revision as u64);
        Self {
            version_at: u8::try_from(version_at).expect("three identifiers fit in 255 bytes"),
            version_len: u8::try_from(version.len()).expect("an identifier fits in 255 bytes"),
            weight: route.weight.get(),
            body,
            etag: format!("\"{tag:016x}\"")
                .into_bytes()
                .try_into()
                .expect("a quoted 16-digit hex number is 18 bytes"),
            seed: crate::pick::version_seed(version),
            health: route.health,
            id: route.id,
            revision: route.revision,
        }
    }

    pub(crate) fn version(&self) -> &str {
        version_in(&self.body, self.version_at, self.version_len)
    }
}

impl From<ActiveRoute<'_>> for Prepared {
    fn from(route: ActiveRoute<'_>) -> Self {
        Self {
            body: route.body.to_vec(),
            version_at: route.version_at,
            version_len: route.version_len,
            weight: route.weight,
            etag: *route.etag,
            seed: route.seed,
            health: Health {
                healthy: route.flags & HEALTHY != 0,
                last_healthy: route.last_healthy(),
            },
            id: route.id(),
            revision: route.revision(),
        }
    }
}

fn version_in(body: &[u8], at: u8, len: u8) -> &str {
    let at = usize::from(at);
    std::str::from_utf8(&body[at..at + usize::from(len)]).expect("identifiers are ASCII")
}

/// The active versions of one group, in one allocation (see the module's documentation).
#[derive(Clone, Debug)]
pub(crate) struct Group {
    packed: Arc<[u8]>,
    /// The service's policy as given, when it is not the default: what the group is
    /// packed again with, and what a cold-start file keeps.
    policy: Option<Arc<ServicePolicy>>,
}

impl Group {
    /// `routes` (at least one, all of one group), sorted by version and packed, with
    /// which of them serve decided by `rules`.
    pub(crate) fn pack(mut routes: Vec<Prepared>, generation: u64, rules: &impl Rules) -> Self {
        debug_assert!(!routes.is_empty());
        routes.sort_by(|a, b| a.version().cmp(b.version()));
        let candidates: Vec<Candidate> = routes
            .iter()
            .map(|r| Candidate {
                weight: r.weight,
                healthy: r.health.healthy,
                tier: rules.tier_of(r.version()),
                last_healthy: r.health.last_healthy,
            })
            .collect();
        // Without a chain and with every version healthy (most services), the decision
        // is that every weighted version serves: made without the general case's work.
        let plain = rules.chain_len() == 0 && candidates.iter().all(|c| c.healthy);
        let (outcome, serving) = if plain {
            let serving: Vec<bool> = candidates.iter().map(|c| c.weight > 0).collect();
            let outcome = if serving.contains(&true) {
                Outcome::Tier(0)
            } else {
                Outcome::NoCandidates
            };
            (outcome, serving)
        } else {
            decide(&candidates, rules.resolve(), |t| rules.min_healthy(t))
        };
        let records = HEADER + routes.len() * RECORD;
        let total = records + routes.iter().map(|r| r.body.len()).sum::<usize>();
        let offset = |n: usize| u32::try_from(n).expect("a group is far smaller than 4 GiB");
        let mut packed = Vec::with_capacity(total);
        packed.extend_from_slice(&offset(routes.len()).to_le_bytes());
        packed.extend_from_slice(&generation.to_le_bytes());
        let (kind, tier, at) = encode(outcome);
        packed.extend_from_slice(&[rules.resolve().code(), kind, tier, rules.chain_len()]);
        packed.extend_from_slice(&at.to_le_bytes());
        for t in 0..MAX_TIERS {
            packed.push(rules.min_healthy(u8::try_from(t).expect("8 tiers")));
        }
        packed.extend_from_slice(&[0; 4]);
        debug_assert_eq!(packed.len(), HEADER);
        let mut body_at = records;
        for ((route, candidate), serves) in routes.iter().zip(&candidates).zip(&serving) {
            packed.push(route.weight);
            packed.extend_from_slice(&route.seed.to_le_bytes());
            packed.extend_from_slice(&route.etag);
            packed.extend_from_slice(&[route.version_at, route.version_len]);
            packed.extend_from_slice(&offset(body_at).to_le_bytes());
            packed.extend_from_slice(&offset(route.body.len()).to_le_bytes());
            let flags =
                if *serves { SERVES } else { 0 } | if route.health.healthy { HEALTHY } else { 0 };
            packed.extend_from_slice(&[flags, candidate.tier]);
            packed.extend_from_slice(&route.health.last_healthy.to_le_bytes());
            packed.extend_from_slice(route.id.as_uuid().as_bytes());
            packed.extend_from_slice(&route.revision.to_le_bytes());
            body_at += route.body.len();
        }
        for route in &routes {
            packed.extend_from_slice(&route.body);
        }
        debug_assert_eq!(packed.len(), total);
        Self {
            packed: packed.into(),
            policy: rules.kept(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        u32_at(&self.packed, 0) as usize
    }

    /// The service's generation when the group was read from the store.
    pub(crate) fn generation(&self) -> u64 {
        u64::from_le_bytes(self.packed[4..12].try_into().expect("eight bytes"))
    }

    pub(crate) fn policy(&self) -> ResolvePolicy {
        ResolvePolicy::from_code(self.packed[12])
    }

    /// Why the versions that serve do.
    pub(crate) fn outcome(&self) -> Outcome {
        decode(self.packed[13], self.packed[14], u32_at(&self.packed, 16))
    }

    pub(crate) fn min_healthy(&self, tier: u8) -> u8 {
        self.packed
            .get(20 + usize::from(tier))
            .copied()
            .filter(|_| usize::from(tier) < MAX_TIERS)
            .unwrap_or(1)
    }

    /// The service's policy as given (the default when none is kept).
    pub(crate) fn full_policy(&self) -> ServicePolicy {
        self.policy.as_deref().cloned().unwrap_or_default()
    }

    /// The active versions, in version order.
    pub(crate) fn routes(&self) -> impl Iterator<Item = ActiveRoute<'_>> {
        (0..self.len()).map(|i| self.route(i))
    }

    fn route(&self, i: usize) -> ActiveRoute<'_> {
        let packed = &self.packed[..];
        let record = &packed[HEADER + i * RECORD..HEADER + (i + 1) * RECORD];
        let (weight, rest) = record.split_at(1);
        let (seed, rest) = rest.split_at(8);
        let (etag, rest) = rest.split_at(ETAG_LEN);
        let body_at = u32_at(rest, 2) as usize;
        let body_len = u32_at(rest, 6) as usize;
        ActiveRoute {
            body: &packed[body_at..body_at + body_len],
            etag: etag.try_into().expect("the record holds a whole tag"),
            version_at: rest[0],
            version_len: rest[1],
            weight: weight[0],
            seed: u64::from_le_bytes(seed.try_into().expect("the record holds a whole seed")),
            flags: rest[10],
            tier: rest[11],
            tail: rest[12..40]
                .try_into()
                .expect("the record holds a whole tail"),
        }
    }
}

/// An outcome as three header fields: kind, tier, time.
fn encode(outcome: Outcome) -> (u8, u8, u32) {
    match outcome {
        Outcome::NoCandidates => (0, 0, 0),
        Outcome::Tier(t) => (1, t, 0),
        Outcome::BelowMinimum(t) => (2, t, 0),
        Outcome::NoneHealthy => (3, 0, 0),
        Outcome::FailOpen(t) => (4, t, 0),
        Outcome::LastKnownGood(at) => (5, 0, at),
    }
}

fn decode(kind: u8, tier: u8, at: u32) -> Outcome {
    match kind {
        1 => Outcome::Tier(tier),
        2 => Outcome::BelowMinimum(tier),
        3 => Outcome::NoneHealthy,
        4 => Outcome::FailOpen(tier),
        5 => Outcome::LastKnownGood(at),
        _ => Outcome::NoCandidates,
    }
}

/// A group is its routes' `(tenant, service, env)`, read out of the first one's answer:
/// the index keeps no key of its own.
impl Keyed for Group {
    fn has_key(&self, key: &str) -> bool {
        self.len() > 0 && self.route(0).answers_for(key)
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes make a u32"))
}

/// One active version of a service, read in place from its group: its answer prepared
/// in advance.
#[derive(Clone, Copy, Debug)]
pub struct ActiveRoute<'g> {
    body: &'g [u8],
    etag: &'g [u8; ETAG_LEN],
    version_at: u8,
    version_len: u8,
    weight: u8,
    seed: u64,
    flags: u8,
    tier: u8,
    /// The rest of the record, read only off the hot path: last seen healthy (4), route
    /// id (16), revision (8).
    tail: &'g [u8; 28],
}

impl<'g> ActiveRoute<'g> {
    /// The route's id.
    pub fn id(&self) -> RouteId {
        let id: [u8; 16] = self.tail[4..20].try_into().expect("sixteen bytes");
        RouteId::from_uuid(uuid::Uuid::from_bytes(id))
    }

    /// The route's revision.
    pub fn revision(&self) -> i64 {
        i64::from_le_bytes(self.tail[20..28].try_into().expect("eight bytes"))
    }

    /// The route as it was added, read back from its answer and record.
    pub(crate) fn served(&self) -> Option<ServedRoute> {
        #[derive(serde::Deserialize)]
        struct Answer {
            tenant: String,
            service: String,
            env: String,
            version: String,
            url: String,
        }
        let answer: Answer = serde_json::from_slice(self.body).ok()?;
        Some(ServedRoute {
            id: self.id(),
            tenant: TenantId::parse(&answer.tenant).ok()?,
            service: ServiceName::parse(&answer.service).ok()?,
            env: EnvName::parse(&answer.env).ok()?,
            version: Version::parse(&answer.version).ok()?,
            url: UpstreamUrl::parse(&answer.url).ok()?,
            weight: Weight::parse(i64::from(self.weight)).ok()?,
            revision: self.revision(),
            health: Health {
                healthy: self.healthy(),
                last_healthy: self.last_healthy(),
            },
        })
    }

    /// The version this route serves.
    pub fn version(&self) -> &'g str {
        version_in(self.body, self.version_at, self.version_len)
    }

    /// The answer: `{"tenant","service","env","version","url"}` as JSON.
    pub fn body(&self) -> &'g [u8] {
        self.body
    }

    /// A strong, quoted entity tag that changes whenever this answer could.
    pub fn etag(&self) -> &'g str {
        std::str::from_utf8(self.etag).expect("the tag is ASCII")
    }

    pub fn weight(&self) -> u8 {
        self.weight
    }

    /// Whether resolve picks among this version (by weight) when no version is asked for:
    /// what the policy's decision made of it (see [`crate::decide`]).
    pub fn serves(&self) -> bool {
        self.flags & SERVES != 0
    }

    /// Whether it counts as healthy (a version whose health is not checked does).
    pub fn healthy(&self) -> bool {
        self.flags & HEALTHY != 0
    }

    /// Its tier in the service's failover chain.
    pub fn tier(&self) -> u8 {
        self.tier
    }

    /// When it was last seen healthy (Unix seconds; 0: never, or not checked).
    pub fn last_healthy(&self) -> u32 {
        u32_at(self.tail, 0)
    }

    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// Whether this route is of the group whose map key is `key` (`tenant/service/env`):
    /// its answer begins with those three, in that order, unescaped.
    fn answers_for(&self, key: &str) -> bool {
        let mut parts = key.split('/');
        let (Some(tenant), Some(service), Some(env), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let mut rest = self.body;
        for text in [
            r#"{"tenant":""#,
            tenant,
            r#"","service":""#,
            service,
            r#"","env":""#,
            env,
            r#"","version":""#,
        ] {
            match rest.strip_prefix(text.as_bytes()) {
                Some(after) => rest = after,
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(service: &str, version: &str, url: &str, weight: u8) -> Route {
        crate::testing::route("acme", service, "prod", version, url, weight, true)
    }

    #[test]
    fn a_packed_group_reads_back_every_version_in_order() {
        let routes = [
            route("billing", "v2", "http://b.internal:8080/a/long/path", 30),
            route("billing", "v1", "http://a.internal", 70),
            route("billing", "v10-rc_1", "https://c.example.com", 0),
        ];
        let prepared: Vec<Prepared> = routes.iter().map(|r| Prepared::new(r.into())).collect();
        let group = Group::pack(prepared.clone(), 7, &ServicePolicy::default());
        assert_eq!(group.generation(), 7);
        assert_eq!(group.len(), 3);
        let read: Vec<ActiveRoute<'_>> = group.routes().collect();
        let versions: Vec<&str> = read.iter().map(ActiveRoute::version).collect();
        assert_eq!(versions, ["v1", "v10-rc_1", "v2"]);
        for route in &read {
            let original = prepared
                .iter()
                .find(|p| p.version() == route.version())
                .expect("packed");
            assert_eq!(route.body(), &original.body[..]);
            assert_eq!(route.etag().as_bytes(), &original.etag);
            assert_eq!(
                (route.weight(), route.seed()),
                (original.weight, original.seed)
            );
            let body: serde_json::Value = serde_json::from_slice(route.body()).expect("JSON");
            assert_eq!(body["version"], route.version());
            // Read back and packed again, a route is the same.
            let again = Group::pack(vec![Prepared::from(*route)], 7, &group);
            assert_eq!(again.routes().next().map(|r| r.body()), Some(route.body()));
        }
    }

    #[test]
    fn a_group_is_recognised_by_its_whole_key_only() {
        let route = route("billing", "v1", "http://a", 1);
        let group = Group::pack(
            vec![Prepared::new((&route).into())],
            1,
            &ServicePolicy::default(),
        );
        assert!(group.has_key("acme/billing/prod"));
        for other in [
            "acme/billing/pro",
            "acme/billing/prod2",
            "acme/bill/prod",
            "acm/billing/prod",
            "acme/billing",
            "acme/billing/prod/v1",
            "acme/billing/prod/",
            "",
        ] {
            assert!(!group.has_key(other), "{other}");
        }
    }
}
