//! The registry's domain: validated identifiers, routes and the routing snapshot that
//! answers `resolve`. Nothing here does I/O; every other crate depends on this one.

mod error;
mod event;
mod group;
mod id;
mod ident;
mod index;
mod key;
pub mod pick;
mod policy;
mod route;
mod snapshot;
#[cfg(test)]
mod testing;
mod upstream;
mod webhook;

pub use error::{DomainError, FieldError, FieldErrors};
pub use event::{Event, EventType, KeyFacts, EVENT_SCHEMA, EVENT_SOURCE};
pub use id::{
    EventId, EventKind, Id, IdKind, JobId, JobKind, KeyId, KeyKind, RouteId, RouteKind, WebhookId,
    WebhookKind,
};
pub use ident::{EnvName, ServiceName, TenantId, Version};
pub use key::{ApiKey, Grant, Role, SecretHash};
pub use policy::{
    decide, Candidate, FailoverTier, HealthCheck, HealthState, Outcome, ProbeProtocol,
    ResolvePolicy, ServicePolicy, StatusRange, MAX_TIERS, MAX_TIER_VERSIONS,
};
pub use route::{
    now, rfc3339, GroupKey, NewRoute, Route, RouteKey, RoutePatch, Weight, IDENTIFIER_PATTERN,
};
pub use snapshot::{
    ActiveRoute, Health, Pick, RouteChange, RoutingSnapshot, ServedRoute, ServiceFacts,
    ServiceView, SnapshotBuilder,
};
pub use upstream::UpstreamUrl;
pub use webhook::{Webhook, MAX_WEBHOOK_DESCRIPTION};
