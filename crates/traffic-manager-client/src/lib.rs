//! A client for traffic-manager's API v1.
//!
//! [`Client`] is the typed API: routes, resolve and watch, each request retried with
//! backoff when the server is out of reach or asks to be retried (`429`/`503` with
//! `Retry-After`). [`Resolver`] answers resolve from memory: the first resolve of a
//! service fetches its routing state, and a task of its own then watches the service
//! (long polls) so that the cache changes when the service does. When the server cannot
//! be reached, the last known state keeps answering for a bounded time, and each answer
//! says how stale it is. A version is picked as the server picks it (the same code,
//! `tm_domain::pick`): the same key sticks to the same version in the cache and on the
//! server. Where watch is not available, answers come from the resolve endpoint,
//! revalidated with their `ETag` once their `max-age` has passed.

mod api;
mod client;
mod error;
mod resolver;

pub use api::{
    ApiKey, AuditEntry, AuditPage, CreatedKey, DeadJob, FieldChange, NewRoute, Page, Resolved,
    RolledBack, Route, RouteKey, RouteQuery, ServiceKey, VersionState, WatchState,
};
pub use client::{Client, ClientBuilder, Pick, Revalidated};
pub use error::{Error, Problem};
pub use resolver::{CachedAnswer, Resolver, ResolverOptions};
