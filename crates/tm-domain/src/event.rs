//! Change events: what the outbox keeps of every change, written in the change's own
//! transaction, and the form it is published in (a CloudEvents 1.0 event in JSON).
//!
//! The format is versioned by `dataschema`: a change a consumer could trip over (a field
//! removed or retyped) makes a new version; new fields may be added to a version.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{json, Value};

use crate::{EventId, KeyId, Role, Route, TenantId};

/// The version of the event format, as each event's `dataschema` names it.
pub const EVENT_SCHEMA: &str = "urn:traffic-manager:event:v1";

/// Every event's `source`: the registry. (`id` is unique within it.)
pub const EVENT_SOURCE: &str = "/traffic-manager";

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventType {
    #[serde(rename = "route.created")]
    RouteCreated,
    /// Its url or weight changed.
    #[serde(rename = "route.updated")]
    RouteUpdated,
    #[serde(rename = "route.activated")]
    RouteActivated,
    #[serde(rename = "route.deactivated")]
    RouteDeactivated,
    #[serde(rename = "route.deleted")]
    RouteDeleted,
    #[serde(rename = "key.created")]
    KeyCreated,
    #[serde(rename = "key.revoked")]
    KeyRevoked,
}

impl EventType {
    pub const ALL: [EventType; 7] = [
        Self::RouteCreated,
        Self::RouteUpdated,
        Self::RouteActivated,
        Self::RouteDeactivated,
        Self::RouteDeleted,
        Self::KeyCreated,
        Self::KeyRevoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RouteCreated => "route.created",
            Self::RouteUpdated => "route.updated",
            Self::RouteActivated => "route.activated",
            Self::RouteDeactivated => "route.deactivated",
            Self::RouteDeleted => "route.deleted",
            Self::KeyCreated => "key.created",
            Self::KeyRevoked => "key.revoked",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == raw)
    }

    /// Whether the event is about an API key (not a route).
    pub fn is_key(self) -> bool {
        matches!(self, Self::KeyCreated | Self::KeyRevoked)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change, as the outbox keeps it and the event API and sinks deliver it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: EventId,
    pub kind: EventType,
    /// The tenant the change belongs to; none for an admin key's.
    pub tenant: Option<TenantId>,
    /// What changed: `tenant/service/env/version` for a route, `keys/<key id>` for a key.
    pub subject: String,
    pub time: DateTime<Utc>,
    /// The change itself; see [`Event::route`] and [`Event::key`].
    pub data: Value,
}

impl Event {
    /// A route's change: `before` is none for a creation, `after` none for a deletion.
    /// Its data: the route's key fields, `route_id`, `revision` (the route's after the
    /// change, or at its deletion), `actor`, and the route `before` and `after` as the
    /// API shows a route.
    pub fn route(
        kind: EventType,
        actor: &str,
        before: Option<&Route>,
        after: Option<&Route>,
        time: DateTime<Utc>,
    ) -> Self {
        let route = after
            .or(before)
            .expect("a change has a route before or after");
        Self {
            id: EventId::generate(),
            kind,
            tenant: Some(route.tenant.clone()),
            subject: format!(
                "{}/{}/{}/{}",
                route.tenant, route.service, route.env, route.version
            ),
            time,
            data: json!({
                "tenant": route.tenant,
                "service": route.service,
                "env": route.env,
                "version": route.version,
                "route_id": route.id,
                "revision": route.revision,
                "actor": actor,
                "before": before,
                "after": after,
            }),
        }
    }

    /// An API key created or revoked: its id, name, role and tenant and the actor; never
    /// the secret nor its hash.
    pub fn key(kind: EventType, actor: &str, key: KeyFacts<'_>, time: DateTime<Utc>) -> Self {
        Self {
            id: EventId::generate(),
            kind,
            tenant: key.tenant.cloned(),
            subject: format!("keys/{}", key.id),
            time,
            data: json!({
                "key_id": key.id,
                "name": key.name,
                "role": key.role.as_str(),
                "tenant": key.tenant,
                "actor": actor,
            }),
        }
    }

    /// The events that must reach a consumer in the order they were made share this:
    /// a route's service (`tenant/service/env`), or the key.
    pub fn ordering_key(&self) -> &str {
        if self.kind.is_key() {
            return &self.subject;
        }
        self.subject
            .rsplit_once('/')
            .map_or(self.subject.as_str(), |(service, _)| service)
    }
}

/// What an event tells of an API key.
#[derive(Clone, Copy, Debug)]
pub struct KeyFacts<'a> {
    pub id: KeyId,
    pub name: &'a str,
    pub role: Role,
    pub tenant: Option<&'a TenantId>,
}

/// The CloudEvents 1.0 structured JSON form: the required attributes, `subject`, `time`,
/// `datacontenttype`, `dataschema`, and the extension attribute `tenant` (absent for an
/// admin key's events).
impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            specversion: &'static str,
            id: EventId,
            source: &'static str,
            #[serde(rename = "type")]
            kind: EventType,
            subject: &'a str,
            #[serde(with = "crate::route::rfc3339")]
            time: DateTime<Utc>,
            datacontenttype: &'static str,
            dataschema: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            tenant: Option<&'a TenantId>,
            data: &'a Value,
        }
        Wire {
            specversion: "1.0",
            id: self.id,
            source: EVENT_SOURCE,
            kind: self.kind,
            subject: &self.subject,
            time: self.time,
            datacontenttype: "application/json",
            dataschema: EVENT_SCHEMA,
            tenant: self.tenant.as_ref(),
            data: &self.data,
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::route;

    #[test]
    fn a_route_event_is_a_cloudevent_ordered_by_its_service() {
        let before = route(
            "acme",
            "billing",
            "prod",
            "v1",
            "http://10.0.0.1:8080",
            50,
            false,
        );
        let mut after = before.clone();
        after.active = true;
        after.revision += 1;
        let event = Event::route(
            EventType::RouteActivated,
            "key:k1",
            Some(&before),
            Some(&after),
            before.updated_at,
        );
        assert_eq!(event.subject, "acme/billing/prod/v1");
        assert_eq!(event.ordering_key(), "acme/billing/prod");
        let wire = serde_json::to_value(&event).expect("serializes");
        assert_eq!(wire["specversion"], "1.0");
        assert_eq!(wire["type"], "route.activated");
        assert_eq!(wire["source"], EVENT_SOURCE);
        assert_eq!(wire["dataschema"], EVENT_SCHEMA);
        assert_eq!(wire["tenant"], "acme");
        assert_eq!(wire["id"], event.id.to_string());
        assert_eq!(wire["data"]["revision"], after.revision);
        assert_eq!(wire["data"]["before"]["active"], false);
        assert_eq!(wire["data"]["after"]["active"], true);
        assert_eq!(wire["data"]["actor"], "key:k1");
    }

    #[test]
    fn an_admin_key_event_has_no_tenant_and_no_secret() {
        let id = KeyId::generate();
        let facts = KeyFacts {
            id,
            name: "ops",
            role: Role::Admin,
            tenant: None,
        };
        let event = Event::key(EventType::KeyCreated, "bootstrap", facts, Utc::now());
        assert_eq!(event.ordering_key(), format!("keys/{id}"));
        let wire = serde_json::to_value(&event).expect("serializes");
        assert!(wire.get("tenant").is_none());
        assert_eq!(wire["data"]["role"], "admin");
        assert_eq!(
            wire["data"].as_object().map(|o| o.len()),
            Some(5),
            "key_id, name, role, tenant, actor and nothing else"
        );
    }

    #[test]
    fn every_type_reads_back() {
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).expect("serializes"),
                kind.as_str()
            );
        }
        assert_eq!(EventType::parse("route.renamed"), None);
    }
}
