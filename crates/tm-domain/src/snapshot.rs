//! The routing snapshot: every active route, in memory, answering `resolve`.
//!
//! A snapshot is immutable; changes produce a new one that shares all untouched groups
//! with the old (see [`crate::index`]), so publishing a change costs a small fraction of
//! a full copy.

use std::time::Instant;

pub use crate::group::{ActiveRoute, Health, ServiceFacts};
use crate::group::{AnswerParts, Group, Prepared};
use crate::ident::MAX_IDENTIFIER_LEN;
use crate::index::SharedIndex;
use crate::{
    EnvName, GroupKey, Outcome, ResolvePolicy, Route, RouteId, ServiceName, TenantId, UpstreamUrl,
    Version, Weight,
};

/// How `resolve` picks among the active versions of a service.
#[derive(Clone, Copy, Debug)]
pub enum Pick<'a> {
    /// This version, if it is active, whatever its weight.
    Version(&'a Version),
    /// By weight, the same version every time for the same key (rendezvous hashing).
    Sticky(&'a str),
    /// By weight, using the given random number.
    Random(u64),
}

/// One change to one route, as a write left it.
#[derive(Clone, Copy, Debug)]
pub enum RouteChange<'a> {
    /// The route exists in this state (active or not).
    Stored(&'a Route),
    /// The route was deleted.
    Deleted(&'a Route),
}

/// An active route as the routing snapshot needs it: what its answer is made of, and
/// nothing else (a full load reads only these columns).
#[derive(Clone, Debug)]
pub struct ServedRoute {
    pub id: RouteId,
    pub tenant: TenantId,
    pub service: ServiceName,
    pub env: EnvName,
    pub version: Version,
    pub url: UpstreamUrl,
    pub weight: Weight,
    pub revision: i64,
    pub health: Health,
}

impl ServedRoute {
    pub fn group(&self) -> GroupKey {
        GroupKey {
            tenant: self.tenant.clone(),
            service: self.service.clone(),
            env: self.env.clone(),
        }
    }
}

impl From<&Route> for ServedRoute {
    fn from(route: &Route) -> Self {
        Self {
            id: route.id,
            tenant: route.tenant.clone(),
            service: route.service.clone(),
            env: route.env.clone(),
            version: route.version.clone(),
            url: route.url.clone(),
            weight: route.weight,
            revision: route.revision,
            health: Health::default(),
        }
    }
}

/// Builds a snapshot one route at a time, so that a full load need not hold every
/// stored row at once: each route is reduced to its prepared answer as it arrives.
/// Routes given in natural-key order (as a full load reads them) go straight into the
/// map a group at a time; any other order works too, only slower.
#[derive(Default)]
pub struct SnapshotBuilder {
    snapshot: RoutingSnapshot,
    /// The group being gathered, its service's facts, and its active routes so far.
    current: Option<Gathering>,
}

struct Gathering {
    key: Box<str>,
    facts: ServiceFacts,
    routes: Vec<Prepared>,
}

impl SnapshotBuilder {
    /// Adds `route` if it is active, its service's facts the defaults.
    pub fn add(&mut self, route: &Route) {
        if route.active {
            self.push(route.into(), &ServiceFacts::default());
        }
    }

    /// Adds an active route, read for the snapshot alone, of a service with `facts`.
    pub fn add_served(&mut self, route: &ServedRoute, facts: &ServiceFacts) {
        self.push(route.into(), facts);
    }

    fn push(&mut self, route: AnswerParts<'_>, facts: &ServiceFacts) {
        let mut buf = [0u8; 3 * MAX_IDENTIFIER_LEN + 2];
        let key = group_key_in(&mut buf, route.tenant, route.service, route.env);
        match &mut self.current {
            Some(current) if *current.key == *key => current.routes.push(Prepared::new(route)),
            _ => {
                self.flush();
                self.current = Some(Gathering {
                    key: key.into(),
                    facts: facts.clone(),
                    routes: vec![Prepared::new(route)],
                });
            }
        }
    }

    fn flush(&mut self) {
        if let Some(Gathering {
            key,
            facts,
            mut routes,
        }) = self.current.take()
        {
            if let Some(earlier) = self.snapshot.groups.get(&key) {
                // The group came in pieces: keep what arrived before.
                self.snapshot.route_count -= earlier.len();
                routes.extend(earlier.routes().map(Prepared::from));
            }
            self.snapshot.route_count += routes.len();
            self.snapshot
                .groups
                .insert(&key, Group::pack(routes, facts.generation, &facts.policy));
        }
    }

    pub fn build(mut self) -> RoutingSnapshot {
        self.flush();
        self.snapshot.built_at = Instant::now();
        self.snapshot
    }
}

/// An immutable view of every active route.
#[derive(Clone, Debug)]
pub struct RoutingSnapshot {
    groups: SharedIndex<Group>,
    route_count: usize,
    built_at: Instant,
}

impl Default for RoutingSnapshot {
    fn default() -> Self {
        Self {
            groups: SharedIndex::default(),
            route_count: 0,
            built_at: Instant::now(),
        }
    }
}

impl RoutingSnapshot {
    /// A snapshot of the active routes among `routes`.
    pub fn from_routes<'a>(routes: impl IntoIterator<Item = &'a Route>) -> Self {
        let mut builder = SnapshotBuilder::default();
        for route in routes {
            builder.add(route);
        }
        builder.build()
    }

    /// This snapshot with the group `key` replaced by the active ones among `routes`
    /// (which must all belong to that group: it is the group's whole current state).
    pub fn with_group<'a>(
        &self,
        key: &GroupKey,
        routes: impl IntoIterator<Item = &'a Route>,
    ) -> Self {
        let served: Vec<ServedRoute> = routes
            .into_iter()
            .filter(|r| r.active)
            .map(ServedRoute::from)
            .collect();
        self.with_groups(
            std::slice::from_ref(key),
            &served,
            &std::collections::HashMap::new(),
        )
    }

    /// This snapshot with each group in `keys` replaced by its routes among `routes` (the
    /// active routes of all those groups together, in any order) and its service's facts
    /// in `services` (the defaults for a service not there).
    pub fn with_groups(
        &self,
        keys: &[GroupKey],
        routes: &[ServedRoute],
        services: &std::collections::HashMap<GroupKey, ServiceFacts>,
    ) -> Self {
        let mut by_group: std::collections::HashMap<&GroupKey, Vec<&ServedRoute>> =
            keys.iter().map(|k| (k, Vec::new())).collect();
        for route in routes {
            if let Some(members) = by_group.get_mut(&route.group()) {
                members.push(route);
            }
        }
        // One copy, changed in place: each shard touched is copied once, not per group.
        let mut next = self.clone();
        let defaults = ServiceFacts::default();
        for (key, members) in by_group {
            let mut active: Vec<Prepared> = Vec::with_capacity(members.len());
            for route in members {
                // The same route given twice is one version, not two.
                if !active.iter().any(|a| a.version() == route.version.as_str()) {
                    active.push(Prepared::new(route.into()));
                }
            }
            let facts = services.get(key).unwrap_or(&defaults);
            next.replace_group(
                group_key(&key.tenant, &key.service, &key.env).into_boxed_str(),
                active,
                |routes| Group::pack(routes, facts.generation, &facts.policy),
            );
        }
        next
    }

    /// Whether `version` is one of the active versions of `key`'s group.
    pub fn has_version(&self, key: &GroupKey, version: &Version) -> bool {
        let mut buf = [0u8; 3 * MAX_IDENTIFIER_LEN + 2];
        let map_key = group_key_in(&mut buf, &key.tenant, &key.service, &key.env);
        self.groups
            .get(map_key)
            .is_some_and(|g| g.routes().any(|r| r.version() == version.as_str()))
    }

    /// This snapshot with one route's change applied, leaving the rest of its group as is
    /// (its service's generation and policy too: the next read of the group from the
    /// store brings them up to date).
    pub fn with_change(&self, change: RouteChange<'_>) -> Self {
        let (route, keep) = match change {
            RouteChange::Stored(r) => (r, r.active),
            RouteChange::Deleted(r) => (r, false),
        };
        let map_key = group_key(&route.tenant, &route.service, &route.env).into_boxed_str();
        let existing = self.groups.get(&map_key).cloned();
        let mut routes: Vec<Prepared> = existing
            .iter()
            .flat_map(|g| {
                g.routes()
                    .filter(|r| r.version() != route.version.as_str())
                    .map(Prepared::from)
                    .collect::<Vec<_>>()
            })
            .collect();
        if keep {
            routes.push(Prepared::new(route.into()));
        }
        let mut next = self.clone();
        next.replace_group(map_key, routes, |routes| match &existing {
            Some(group) => Group::pack(routes, group.generation(), group),
            None => Group::pack(routes, 0, &crate::ServicePolicy::default()),
        });
        next
    }

    fn replace_group(
        &mut self,
        map_key: Box<str>,
        routes: Vec<Prepared>,
        pack: impl FnOnce(Vec<Prepared>) -> Group,
    ) {
        let removed = self.groups.remove(&map_key).map_or(0, |g| g.len());
        let added = routes.len();
        if !routes.is_empty() {
            self.groups.insert(&map_key, pack(routes));
        }
        self.route_count = self.route_count + added - removed;
        self.built_at = Instant::now();
    }

    /// The active route that answers for `(tenant, service, env)`, if any.
    pub fn resolve(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        env: &EnvName,
        pick: Pick<'_>,
    ) -> Option<ActiveRoute<'_>> {
        let mut buf = [0u8; 3 * MAX_IDENTIFIER_LEN + 2];
        let key = group_key_in(&mut buf, tenant, service, env);
        let group = self.groups.get(key)?;
        match pick {
            Pick::Version(v) => group.routes().find(|r| r.version() == v.as_str()),
            Pick::Sticky(key) => sticky(group, key),
            Pick::Random(n) => weighted(group, n),
        }
    }

    /// What the snapshot holds of `(tenant, service, env)`, if it has an active version.
    pub fn service(
        &self,
        tenant: &TenantId,
        service: &ServiceName,
        env: &EnvName,
    ) -> Option<ServiceView<'_>> {
        let mut buf = [0u8; 3 * MAX_IDENTIFIER_LEN + 2];
        let key = group_key_in(&mut buf, tenant, service, env);
        self.groups.get(key).map(|group| ServiceView { group })
    }

    /// Every service the snapshot holds, with its facts and its active routes (as
    /// [`SnapshotBuilder::add_served`] takes them): what a cold-start file keeps, and
    /// what builds this snapshot again. In no particular order.
    pub fn export(&self) -> Vec<(GroupKey, ServiceFacts, Vec<ServedRoute>)> {
        self.groups
            .values()
            .filter_map(|group| {
                let routes: Vec<ServedRoute> = group.routes().filter_map(|r| r.served()).collect();
                let first = routes.first()?;
                let key = first.group();
                let facts = ServiceFacts {
                    generation: group.generation(),
                    policy: group.full_policy(),
                };
                Some((key, facts, routes))
            })
            .collect()
    }

    /// Number of active routes.
    pub fn route_count(&self) -> usize {
        self.route_count
    }

    /// When this snapshot was last changed.
    pub fn built_at(&self) -> Instant {
        self.built_at
    }
}

/// One service as the snapshot holds it: for explain and watch, not for resolve.
#[derive(Clone, Copy, Debug)]
pub struct ServiceView<'s> {
    group: &'s Group,
}

impl<'s> ServiceView<'s> {
    /// The service's generation when the snapshot last read it from the store.
    pub fn generation(&self) -> u64 {
        self.group.generation()
    }

    pub fn policy(&self) -> ResolvePolicy {
        self.group.policy()
    }

    /// Why the versions that serve do.
    pub fn outcome(&self) -> Outcome {
        self.group.outcome()
    }

    /// The fewest healthy versions tier `tier` needs to serve.
    pub fn min_healthy(&self, tier: u8) -> u8 {
        self.group.min_healthy(tier)
    }

    /// The active versions, in version order.
    pub fn routes(&self) -> impl Iterator<Item = ActiveRoute<'s>> {
        self.group.routes()
    }

    /// Each serving version's rendezvous score for the sticky `key` (the highest wins),
    /// and the version `key` sticks to.
    pub fn sticky_scores(
        &self,
        key: &str,
    ) -> (Vec<(ActiveRoute<'s>, f64)>, Option<ActiveRoute<'s>>) {
        let scores = self
            .group
            .routes()
            .filter(ActiveRoute::serves)
            .map(|route| (route, rendezvous_score(key, &route)))
            .collect();
        (scores, sticky(self.group, key))
    }
}

/// The serving version `key` sticks to (see [`crate::pick::sticky`]).
fn sticky<'g>(group: &'g Group, key: &str) -> Option<ActiveRoute<'g>> {
    crate::pick::sticky(
        key,
        group
            .routes()
            .filter(ActiveRoute::serves)
            .map(|route| (route, route.seed(), route.weight())),
    )
}

/// `route`'s rendezvous score for `key`.
fn rendezvous_score(key: &str, route: &ActiveRoute<'_>) -> f64 {
    crate::pick::rendezvous_score(key, route.seed(), route.weight())
}

/// A serving version, by weight, at point `n` (see [`crate::pick::weighted`]).
fn weighted(group: &Group, n: u64) -> Option<ActiveRoute<'_>> {
    crate::pick::weighted(n, || {
        group
            .routes()
            .filter(ActiveRoute::serves)
            .map(|route| (route, route.weight()))
    })
}

fn group_key(tenant: &TenantId, service: &ServiceName, env: &EnvName) -> String {
    format!("{tenant}/{service}/{env}")
}

/// The map key of a group, written into `buf` so that a lookup allocates nothing.
/// `/` cannot occur in an identifier, so the key is unambiguous.
fn group_key_in<'b>(
    buf: &'b mut [u8; 3 * MAX_IDENTIFIER_LEN + 2],
    tenant: &TenantId,
    service: &ServiceName,
    env: &EnvName,
) -> &'b str {
    let mut len = 0;
    for (i, part) in [tenant.as_str(), service.as_str(), env.as_str()]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            buf[len] = b'/';
            len += 1;
        }
        buf[len..len + part.len()].copy_from_slice(part.as_bytes());
        len += part.len();
    }
    std::str::from_utf8(&buf[..len]).expect("identifiers are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UpstreamUrl;

    fn route(version: &str, weight: u8, active: bool) -> Route {
        let url = format!("http://{version}.internal");
        crate::testing::route("acme", "billing", "prod", version, &url, weight, active)
    }

    fn ids() -> (TenantId, ServiceName, EnvName) {
        (
            TenantId::parse("acme").expect("valid"),
            ServiceName::parse("billing").expect("valid"),
            EnvName::parse("prod").expect("valid"),
        )
    }

    fn pick_sticky<'a>(s: &'a RoutingSnapshot, key: &str) -> Option<&'a str> {
        let (t, sv, e) = ids();
        s.resolve(&t, &sv, &e, Pick::Sticky(key))
            .map(|r| r.version())
    }

    #[test]
    fn only_active_routes_are_served() {
        let s = RoutingSnapshot::from_routes(&[route("v1", 100, false), route("v2", 100, true)]);
        assert_eq!(s.route_count(), 1);
        let (t, sv, e) = ids();
        let v1 = Version::parse("v1").expect("valid");
        assert!(s.resolve(&t, &sv, &e, Pick::Version(&v1)).is_none());
        assert_eq!(pick_sticky(&s, "k"), Some("v2"));
    }

    #[test]
    fn explicit_version_ignores_weight_but_weighted_picks_skip_zero() {
        let s = RoutingSnapshot::from_routes(&[route("v1", 0, true)]);
        let (t, sv, e) = ids();
        let v1 = Version::parse("v1").expect("valid");
        assert!(s.resolve(&t, &sv, &e, Pick::Version(&v1)).is_some());
        assert!(s.resolve(&t, &sv, &e, Pick::Random(7)).is_none());
        assert!(pick_sticky(&s, "k").is_none());
    }

    #[test]
    fn random_picks_follow_the_weights() {
        let s = RoutingSnapshot::from_routes(&[route("v1", 25, true), route("v2", 75, true)]);
        let (t, sv, e) = ids();
        let v2 = (0..100u64)
            .filter(|n| {
                s.resolve(&t, &sv, &e, Pick::Random(*n))
                    .expect("some")
                    .version()
                    == "v2"
            })
            .count();
        assert_eq!(v2, 75);
    }

    #[test]
    fn sticky_keys_split_by_weight_and_move_minimally() {
        let before = RoutingSnapshot::from_routes(&[route("v1", 90, true), route("v2", 10, true)]);
        let after = RoutingSnapshot::from_routes(&[route("v1", 50, true), route("v2", 50, true)]);
        let keys: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();
        let v2_before = keys
            .iter()
            .filter(|k| pick_sticky(&before, k) == Some("v2"))
            .count();
        let v2_after = keys
            .iter()
            .filter(|k| pick_sticky(&after, k) == Some("v2"))
            .count();
        assert!(
            (1_600..2_400).contains(&v2_before),
            "~10% on v2, got {v2_before}"
        );
        assert!(
            (9_400..10_600).contains(&v2_after),
            "~50% on v2, got {v2_after}"
        );
        // Shifting weight towards v2 only moves keys onto v2, never away from it.
        let moved_off_v2 = keys
            .iter()
            .filter(|k| {
                pick_sticky(&before, k) == Some("v2") && pick_sticky(&after, k) != Some("v2")
            })
            .count();
        assert_eq!(moved_off_v2, 0);
    }

    #[test]
    fn sticky_picks_are_stable_across_snapshots_of_the_same_routes() {
        let routes = [
            route("v1", 30, true),
            route("v2", 70, true),
            route("v3", 0, true),
        ];
        let a = RoutingSnapshot::from_routes(&routes);
        let b = RoutingSnapshot::from_routes(routes.iter().rev());
        for i in 0..1000 {
            let key = format!("k{i}");
            assert_eq!(pick_sticky(&a, &key), pick_sticky(&b, &key));
            assert_ne!(pick_sticky(&a, &key), Some("v3"));
        }
    }

    #[test]
    fn replacing_a_group_keeps_the_count_right() {
        let v1 = route("v1", 100, true);
        let s = RoutingSnapshot::from_routes(std::slice::from_ref(&v1));
        let key = v1.group();
        let v2 = route("v2", 100, true);
        let s2 = s.with_group(&key, &[v1.clone(), v2]);
        assert_eq!((s.route_count(), s2.route_count()), (1, 2));
        let s3 = s2.with_group(&key, &[]);
        assert_eq!(s3.route_count(), 0);
        assert!(pick_sticky(&s3, "k").is_none());
    }

    #[test]
    fn a_single_change_keeps_the_rest_of_the_group() {
        let v1 = route("v1", 100, true);
        let v2 = route("v2", 100, true);
        let s = RoutingSnapshot::from_routes(&[v1.clone(), v2.clone()]);
        let off = v2.with_active(false, crate::now()).expect("changes");
        let s2 = s.with_change(RouteChange::Stored(&off));
        assert_eq!(s2.route_count(), 1);
        assert_eq!(pick_sticky(&s2, "k"), Some("v1"));
        let s3 = s2.with_change(RouteChange::Deleted(&v1));
        assert_eq!(s3.route_count(), 0);
        let s4 = s3.with_change(RouteChange::Stored(&v2));
        assert_eq!(pick_sticky(&s4, "k"), Some("v2"));
    }

    #[test]
    fn a_service_named_twice_with_its_routes_twice_is_stored_once() {
        let v1 = ServedRoute::from(&route("v1", 50, true));
        let key = route("v1", 50, true).group();
        let s = RoutingSnapshot::default().with_groups(
            &[key.clone(), key],
            &[v1.clone(), v1],
            &std::collections::HashMap::new(),
        );
        assert_eq!(s.route_count(), 1);
    }

    fn served(version: &str, weight: u8, healthy: bool) -> ServedRoute {
        let mut served = ServedRoute::from(&route(version, weight, true));
        served.health = Health {
            healthy,
            last_healthy: 0,
        };
        served
    }

    #[test]
    fn resolve_serves_what_the_policy_decided_and_explain_can_tell_why() {
        let v = |s: &str| Version::parse(s).expect("valid");
        let policy = crate::ServicePolicy::new(
            ResolvePolicy::HealthyOnly,
            vec![crate::FailoverTier {
                versions: vec![v("blue"), v("blue-2")],
                min_healthy: 2,
            }],
        )
        .expect("valid");
        let facts = ServiceFacts {
            generation: 42,
            policy,
        };
        let key = route("x", 1, true).group();
        let services = std::collections::HashMap::from([(key.clone(), facts)]);
        let routes = [
            served("blue", 100, true),
            served("blue-2", 100, false),
            served("green", 10, true),
        ];
        let s =
            RoutingSnapshot::default().with_groups(std::slice::from_ref(&key), &routes, &services);
        let (t, sv, e) = ids();
        // Blue's tier lacks its minimum: green (the unnamed rest) serves.
        for n in 0..50u64 {
            let picked = s.resolve(&t, &sv, &e, Pick::Random(n)).expect("served");
            assert_eq!(picked.version(), "green");
        }
        assert_eq!(pick_sticky(&s, "user-1"), Some("green"));
        // An explicit version is served whatever its health.
        let blue2 = v("blue-2");
        assert!(s.resolve(&t, &sv, &e, Pick::Version(&blue2)).is_some());

        let view = s.service(&t, &sv, &e).expect("held");
        assert_eq!(view.generation(), 42);
        assert_eq!(view.policy(), ResolvePolicy::HealthyOnly);
        assert_eq!(view.outcome(), Outcome::Tier(1));
        assert_eq!(view.min_healthy(0), 2);
        let tiers: Vec<(&str, u8, bool, bool)> = view
            .routes()
            .map(|r| (r.version(), r.tier(), r.healthy(), r.serves()))
            .collect();
        assert_eq!(
            tiers,
            [
                ("blue", 0, true, false),
                ("blue-2", 0, false, false),
                ("green", 1, true, true)
            ]
        );
        let (scores, stuck) = view.sticky_scores("user-1");
        assert_eq!(scores.len(), 1);
        assert_eq!(stuck.map(|r| r.version()), Some("green"));

        // A change applied alone keeps the group's generation and policy.
        let mut green_off = route("green", 10, true);
        green_off.active = false;
        let after = s.with_change(RouteChange::Stored(&green_off));
        let view = after.service(&t, &sv, &e).expect("held");
        assert_eq!(
            (view.generation(), view.outcome()),
            (42, Outcome::BelowMinimum(0))
        );
        assert_eq!(pick_sticky(&after, "user-1"), Some("blue"));
    }

    #[test]
    fn a_group_given_in_pieces_is_gathered_whole() {
        let mut other = route("v9", 100, true);
        other.service = ServiceName::parse("ledger").expect("valid");
        let mut builder = SnapshotBuilder::default();
        for r in [route("v2", 50, true), other, route("v1.0-rc_1", 50, true)] {
            builder.add(&r);
        }
        let s = builder.build();
        assert_eq!(s.route_count(), 3);
        let (t, sv, e) = ids();
        let versions: Vec<&str> = (0..100u64)
            .filter_map(|n| s.resolve(&t, &sv, &e, Pick::Random(n)).map(|r| r.version()))
            .collect();
        assert!(versions.contains(&"v1.0-rc_1") && versions.contains(&"v2"));
        let v1 = Version::parse("v1.0-rc_1").expect("valid");
        let found = s.resolve(&t, &sv, &e, Pick::Version(&v1)).expect("v1");
        assert_eq!(found.version(), "v1.0-rc_1");
    }

    #[test]
    fn an_exported_snapshot_builds_the_same_snapshot_again() {
        let v = |s: &str| Version::parse(s).expect("valid");
        let policy = crate::ServicePolicy::new(
            ResolvePolicy::LastKnownGood,
            vec![crate::FailoverTier {
                versions: vec![v("blue"), v("gone")],
                min_healthy: 2,
            }],
        )
        .expect("valid");
        let key = route("x", 1, true).group();
        let services = std::collections::HashMap::from([(
            key.clone(),
            ServiceFacts {
                generation: 9,
                policy,
            },
        )]);
        let mut other = route("v1", 100, true);
        other.service = ServiceName::parse("ledger").expect("valid");
        let routes = [
            served("blue", 100, true),
            served("green", 20, false),
            ServedRoute::from(&other),
        ];
        let s = RoutingSnapshot::default().with_groups(
            &[key.clone(), other.group()],
            &routes,
            &services,
        );
        let mut builder = SnapshotBuilder::default();
        for (_, facts, routes) in s.export() {
            for route in &routes {
                builder.add_served(route, &facts);
            }
        }
        let again = builder.build();
        assert_eq!(again.route_count(), 3);
        let (t, sv, e) = ids();
        let (a, b) = (
            s.service(&t, &sv, &e).expect("held"),
            again.service(&t, &sv, &e).expect("held"),
        );
        assert_eq!((a.generation(), a.outcome()), (b.generation(), b.outcome()));
        let view = |v: ServiceView<'_>| -> Vec<(String, String, bool, bool, u8)> {
            v.routes()
                .map(|r| {
                    (
                        r.version().to_owned(),
                        r.etag().to_owned(),
                        r.serves(),
                        r.healthy(),
                        r.tier(),
                    )
                })
                .collect()
        };
        assert_eq!(view(a), view(b));
        for n in 0..20u64 {
            assert_eq!(
                s.resolve(&t, &sv, &e, Pick::Random(n))
                    .map(|r| r.body().to_vec()),
                again
                    .resolve(&t, &sv, &e, Pick::Random(n))
                    .map(|r| r.body().to_vec())
            );
        }
    }

    #[test]
    fn the_answer_body_is_the_contract_shape() {
        let s = RoutingSnapshot::from_routes(&[route("v1", 100, true)]);
        let (t, sv, e) = ids();
        let answer = s.resolve(&t, &sv, &e, Pick::Random(0)).expect("active");
        let body: serde_json::Value = serde_json::from_slice(answer.body()).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"tenant":"acme","service":"billing","env":"prod","version":"v1","url":"http://v1.internal"})
        );
        assert!(answer.etag().starts_with('"') && answer.etag().ends_with('"'));
    }

    #[test]
    fn the_etag_changes_with_the_revision() {
        let r = route("v1", 100, true);
        let patched = r
            .with_patch(
                &crate::RoutePatch {
                    url: Some(UpstreamUrl::parse("http://other").expect("valid")),
                    weight: None,
                },
                crate::now(),
            )
            .expect("changes");
        let (t, sv, e) = ids();
        let a = RoutingSnapshot::from_routes(&[r]);
        let b = RoutingSnapshot::from_routes(&[patched]);
        let tag = |s: &RoutingSnapshot| {
            s.resolve(&t, &sv, &e, Pick::Random(0))
                .expect("active")
                .etag()
                .to_owned()
        };
        assert_ne!(tag(&a), tag(&b));
    }
}
