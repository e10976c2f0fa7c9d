//! Routes: `(tenant, service, env, version) -> url`, with the rules of their lifecycle.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{DomainError, EnvName, RouteId, ServiceName, TenantId, UpstreamUrl, Version};

/// Share of traffic a version gets when resolved without an explicit version: 0–100.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u8")]
pub struct Weight(u8);

impl Weight {
    pub const MAX: u8 = 100;
    pub const DEFAULT: Weight = Weight(100);

    pub fn parse(raw: i64) -> Result<Self, DomainError> {
        match u8::try_from(raw) {
            Ok(w) if w <= Self::MAX => Ok(Self(w)),
            _ => Err(DomainError::invalid("must be an integer from 0 to 100")),
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for Weight {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<i64> for Weight {
    type Error = DomainError;

    fn try_from(raw: i64) -> Result<Self, Self::Error> {
        Self::parse(raw)
    }
}

impl From<Weight> for u8 {
    fn from(w: Weight) -> Self {
        w.0
    }
}

/// The service a client asks for: `(tenant, service, env)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub tenant: TenantId,
    pub service: ServiceName,
    pub env: EnvName,
}

/// The natural key of a route: unique across the registry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouteKey {
    pub tenant: TenantId,
    pub service: ServiceName,
    pub env: EnvName,
    pub version: Version,
}

impl RouteKey {
    pub fn group(&self) -> GroupKey {
        GroupKey {
            tenant: self.tenant.clone(),
            service: self.service.clone(),
            env: self.env.clone(),
        }
    }
}

/// The shape of every identifier, as a regular expression (for API documents).
pub const IDENTIFIER_PATTERN: &str = "^[a-z0-9][a-z0-9._-]{0,62}$";

/// A route as stored and as served by the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Route {
    #[schema(value_type = String, format = "uuid")]
    pub id: RouteId,
    #[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$", example = "acme")]
    pub tenant: TenantId,
    #[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$", example = "billing")]
    pub service: ServiceName,
    #[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$", example = "prod")]
    pub env: EnvName,
    #[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$", example = "v1")]
    pub version: Version,
    /// Absolute http or https URL, as given.
    pub url: UpstreamUrl,
    pub active: bool,
    /// Share of traffic among the active versions when no version is asked for.
    #[schema(value_type = u8, minimum = 0, maximum = 100)]
    pub weight: Weight,
    /// 1 on creation, +1 on every change that alters the route.
    #[schema(minimum = 1)]
    pub revision: i64,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl Route {
    pub fn key(&self) -> RouteKey {
        RouteKey {
            tenant: self.tenant.clone(),
            service: self.service.clone(),
            env: self.env.clone(),
            version: self.version.clone(),
        }
    }

    pub fn group(&self) -> GroupKey {
        GroupKey {
            tenant: self.tenant.clone(),
            service: self.service.clone(),
            env: self.env.clone(),
        }
    }

    /// The route with `active` set; `None` when it already was (a no-op keeps the revision).
    pub fn with_active(&self, active: bool, now: DateTime<Utc>) -> Option<Route> {
        (self.active != active).then(|| Route {
            active,
            revision: self.revision + 1,
            updated_at: now,
            ..self.clone()
        })
    }

    /// The route with `patch` applied; `None` when the patch changes nothing.
    pub fn with_patch(&self, patch: &RoutePatch, now: DateTime<Utc>) -> Option<Route> {
        let url = patch.url.clone().unwrap_or_else(|| self.url.clone());
        let weight = patch.weight.unwrap_or(self.weight);
        (url != self.url || weight != self.weight).then(|| Route {
            url,
            weight,
            revision: self.revision + 1,
            updated_at: now,
            ..self.clone()
        })
    }
}

/// The current time at the precision every backend keeps (microseconds), so that what
/// a write returns equals what is read back later.
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// A route to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRoute {
    pub key: RouteKey,
    pub url: UpstreamUrl,
    pub active: bool,
    pub weight: Weight,
}

impl NewRoute {
    pub fn into_route(self, id: RouteId, now: DateTime<Utc>) -> Route {
        Route {
            id,
            tenant: self.key.tenant,
            service: self.key.service,
            env: self.key.env,
            version: self.key.version,
            url: self.url,
            active: self.active,
            weight: self.weight,
            revision: 1,
            created_at: now,
            updated_at: now,
        }
    }
}

/// A change to a route's URL and/or weight.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutePatch {
    pub url: Option<UpstreamUrl>,
    pub weight: Option<Weight>,
}

/// Timestamps as RFC 3339 in UTC with a `Z` and microsecond precision.
/// Times as the API writes them: RFC 3339, UTC, microseconds.
pub mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let raw = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&raw)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Route {
        let now = Utc::now();
        NewRoute {
            key: RouteKey {
                tenant: TenantId::parse("acme").expect("valid"),
                service: ServiceName::parse("billing").expect("valid"),
                env: EnvName::parse("prod").expect("valid"),
                version: Version::parse("v1").expect("valid"),
            },
            url: UpstreamUrl::parse("http://10.0.0.7:8080").expect("valid"),
            active: false,
            weight: Weight::DEFAULT,
        }
        .into_route(RouteId::generate(), now)
    }

    #[test]
    fn activating_bumps_the_revision_once() {
        let r = route();
        let on = r.with_active(true, Utc::now()).expect("changes");
        assert_eq!(on.revision, 2);
        assert!(on.with_active(true, Utc::now()).is_none(), "no-op");
    }

    #[test]
    fn a_patch_that_changes_nothing_is_a_no_op() {
        let r = route();
        let same = RoutePatch {
            url: Some(r.url.clone()),
            weight: Some(r.weight),
        };
        assert!(r.with_patch(&same, Utc::now()).is_none());
        let heavier = RoutePatch {
            weight: Some(Weight::parse(5).expect("valid")),
            ..RoutePatch::default()
        };
        assert_eq!(
            r.with_patch(&heavier, Utc::now())
                .expect("changes")
                .revision,
            2
        );
    }

    #[test]
    fn weight_is_0_to_100() {
        assert!(Weight::parse(0).is_ok());
        assert!(Weight::parse(100).is_ok());
        for bad in [-1, 101, 256, i64::MAX, i64::MIN] {
            assert!(Weight::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn route_json_has_the_contract_fields() {
        let json = serde_json::to_value(route()).expect("serialize");
        let mut keys: Vec<_> = json.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "active",
                "created_at",
                "env",
                "id",
                "revision",
                "service",
                "tenant",
                "updated_at",
                "url",
                "version",
                "weight"
            ]
        );
        assert!(json["created_at"].as_str().expect("string").ends_with('Z'));
    }
}
