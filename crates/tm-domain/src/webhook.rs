//! A webhook subscription: a URL of a tenant's that receives the tenant's change events,
//! every type or the types it names. Its signing secret is not part of it: the store
//! keeps it sealed, and the API shows it once, at creation.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Event, EventType, TenantId, WebhookId};

/// Longest description, in characters.
pub const MAX_WEBHOOK_DESCRIPTION: usize = 200;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Webhook {
    pub id: WebhookId,
    pub tenant: TenantId,
    pub url: String,
    /// The event types delivered; empty: every type.
    pub event_types: Vec<EventType>,
    pub description: Option<String>,
    #[serde(with = "crate::route::rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl Webhook {
    /// Whether `event` is to be delivered to this subscription: one of its tenant's, of
    /// a type it takes.
    pub fn wants(&self, event: &Event) -> bool {
        event.tenant.as_ref() == Some(&self.tenant)
            && (self.event_types.is_empty() || self.event_types.contains(&event.kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(tenant: &str, types: Vec<EventType>) -> Webhook {
        Webhook {
            id: WebhookId::generate(),
            tenant: TenantId::parse(tenant).expect("tenant"),
            url: "https://hooks.example/in".into(),
            event_types: types,
            description: None,
            created_at: crate::now(),
        }
    }

    fn event(tenant: Option<&str>, kind: EventType) -> Event {
        Event {
            id: crate::EventId::generate(),
            kind,
            tenant: tenant.map(|t| TenantId::parse(t).expect("tenant")),
            subject: "acme/billing/prod/v1".into(),
            time: crate::now(),
            data: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_subscription_takes_its_tenants_events_of_its_types() {
        let all = hook("acme", Vec::new());
        assert!(all.wants(&event(Some("acme"), EventType::RouteCreated)));
        assert!(all.wants(&event(Some("acme"), EventType::KeyRevoked)));
        assert!(!all.wants(&event(Some("globex"), EventType::RouteCreated)));
        assert!(!all.wants(&event(None, EventType::KeyCreated)));

        let some = hook(
            "acme",
            vec![EventType::RouteActivated, EventType::RouteDeactivated],
        );
        assert!(some.wants(&event(Some("acme"), EventType::RouteActivated)));
        assert!(!some.wants(&event(Some("acme"), EventType::RouteCreated)));
    }
}
