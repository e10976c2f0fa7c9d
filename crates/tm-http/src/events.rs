//! The event API: the outbox read a page at a time, so that consumers without Kafka can
//! follow every change. Tenant-scoped as every read is; API key events only for keys
//! that may manage keys.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tm_domain::{Event, EventId, FieldErrors, TenantId};
use tm_store::{EventFilter, EventPosition};

use crate::auth::{Action, Caller};
use crate::extract::ApiQuery;
use crate::{page, ApiError, AppState};

/// Which page of events to read.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only this tenant's events; a key bound to a tenant reads its own tenant's only.
    #[param(value_type = Option<String>, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    tenant: Option<String>,
    /// The events after this one (its `id`); from the oldest kept when absent. An event
    /// no longer kept (see `TM_EVENTS_RETENTION`) is a 404.
    #[param(value_type = Option<String>, format = "uuid", pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[derive(Serialize)]
struct EventList {
    items: Vec<Event>,
    /// Where to go on from: the last event's id, or the `after` asked when there is
    /// nothing new (none when there is nothing at all).
    next_after: Option<EventId>,
}

/// Change events, oldest first, a page at a time: each a CloudEvents 1.0 event (see
/// `Event`). Follow them by asking again with `after` set to `next_after`.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    operation_id = "list_events",
    tag = "events",
    params(EventQuery),
    responses(
        (status = 200, description = "A page of events", body = crate::openapi::EventListDoc),
        crate::openapi::Problems,
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> Result<Response, ApiError> {
    let mut errors = FieldErrors::default();
    let tenant = errors.optional("tenant", query.tenant.as_deref(), TenantId::parse);
    let after = query
        .after
        .as_deref()
        .and_then(|raw| errors.check("after", raw.parse::<EventId>()));
    let limit = page::limit(query.limit, &mut errors);
    errors.into_result()?;
    let filter = EventFilter {
        tenant: caller.list_scope(Action::ReadRoutes, tenant)?,
        key_events: caller.may(Action::ManageKeys),
    };

    let position = match after {
        None => EventPosition::default(),
        Some(id) => state
            .guard
            .read_uncached(|| state.store.event_position(id, filter.tenant.as_ref()))
            .await?
            .ok_or(ApiError::EventNotKept)?,
    };
    let stored = state
        .guard
        .read_uncached(|| state.store.events_after(&filter, position, limit))
        .await?;
    let items: Vec<Event> = stored.into_iter().map(|s| s.event).collect();
    let next_after = items.last().map(|e| e.id).or(after);
    Ok(Json(EventList { items, next_after }).into_response())
}
