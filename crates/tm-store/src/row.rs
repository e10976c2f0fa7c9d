//! Rows as read back from either backend, parsed into domain types at the edge.

use chrono::{DateTime, Utc};
use prometheus::IntCounter;
use tm_domain::{
    EnvName, Grant, GroupKey, Health, KeyId, Role, Route, RouteId, SecretHash, ServedRoute,
    ServiceFacts, ServiceName, ServicePolicy, TenantId, UpstreamUrl, Version, Weight,
};

use crate::history::StateEntry;
use crate::{
    AuditEntry, ClaimedJob, DeadJob, EventPosition, KeyAuditAction, KeyAuditEntry, KeyRecord,
    LoadCursor, Queue, StoreError, StoredEvent,
};

/// The columns of `routes` that an active route's answer is made of, selected with `id`
/// as text and `weight` as a 64-bit integer so that one row type serves both backends:
/// what a full load of the routing snapshot reads.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ServedRow {
    id: String,
    tenant: String,
    service: String,
    env: String,
    version: String,
    url: String,
    weight: i64,
    revision: i64,
}

impl TryFrom<ServedRow> for ServedRoute {
    type Error = StoreError;

    fn try_from(row: ServedRow) -> Result<Self, Self::Error> {
        let corrupt = |what: &str, e: tm_domain::DomainError| {
            StoreError::Corrupt(format!("route {}: {what} {e}", row.id))
        };
        Ok(ServedRoute {
            id: row.id.parse::<RouteId>().map_err(|e| corrupt("id", e))?,
            tenant: TenantId::parse(&row.tenant).map_err(|e| corrupt("tenant", e))?,
            service: ServiceName::parse(&row.service).map_err(|e| corrupt("service", e))?,
            env: EnvName::parse(&row.env).map_err(|e| corrupt("env", e))?,
            version: Version::parse(&row.version).map_err(|e| corrupt("version", e))?,
            url: UpstreamUrl::parse(&row.url).map_err(|e| corrupt("url", e))?,
            weight: Weight::parse(row.weight).map_err(|e| corrupt("weight", e))?,
            revision: row.revision,
            health: Health::default(),
        })
    }
}

/// An active route as the routing snapshot reads it: its served columns and its health
/// (none when its health is not checked).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct LoadedRow {
    #[sqlx(flatten)]
    served: ServedRow,
    health_state: Option<String>,
    last_online_at: Option<DateTime<Utc>>,
}

impl TryFrom<LoadedRow> for ServedRoute {
    type Error = StoreError;

    fn try_from(row: LoadedRow) -> Result<Self, Self::Error> {
        let mut route = ServedRoute::try_from(row.served)?;
        route.health = Health {
            // Only a route its checks found failing counts as unhealthy.
            healthy: row.health_state.as_deref() != Some("degraded"),
            last_healthy: row.last_online_at.map_or(0, |at| {
                u32::try_from(at.timestamp().max(1)).unwrap_or(u32::MAX)
            }),
        };
        Ok(route)
    }
}

/// A `services` row: a service's generation and routing policy.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ServiceRow {
    tenant: String,
    service: String,
    env: String,
    generation: i64,
    policy: Option<String>,
}

impl ServiceRow {
    /// The service and its facts. A policy the domain refuses (written behind the
    /// registry's back) is logged and replaced by the default, so that the service's
    /// routes are still served; a row naming no valid service is `None`.
    pub(crate) fn facts(self) -> Option<(GroupKey, ServiceFacts)> {
        let key = GroupKey {
            tenant: TenantId::parse(&self.tenant).ok()?,
            service: ServiceName::parse(&self.service).ok()?,
            env: EnvName::parse(&self.env).ok()?,
        };
        let policy = match self.policy.as_deref().map(parse_policy) {
            None => ServicePolicy::default(),
            Some(Ok(policy)) => policy,
            Some(Err(err)) => {
                tracing::error!(
                    tenant = %key.tenant, service = %key.service, env = %key.env, error = %err,
                    "a stored service policy is invalid; the default policy applies"
                );
                ServicePolicy::default()
            }
        };
        let facts = ServiceFacts {
            generation: u64::try_from(self.generation).unwrap_or(0),
            policy,
        };
        Some((key, facts))
    }
}

/// A policy as stored (its JSON form), checked as when it was set.
pub(crate) fn parse_policy(raw: &str) -> Result<ServicePolicy, String> {
    let stored: ServicePolicy = serde_json::from_str(raw).map_err(|e| e.to_string())?;
    stored.checked().map_err(|e| e.to_string())
}

impl ServedRow {
    /// Where a full load continues after this row.
    pub(crate) fn load_cursor(&self) -> LoadCursor {
        LoadCursor {
            tenant: self.tenant.clone(),
            service: self.service.clone(),
            env: self.env.clone(),
            version: self.version.clone(),
        }
    }
}

/// Every column of `routes`: the served ones, and whether the route is active and when
/// it was made and last changed.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RouteRow {
    #[sqlx(flatten)]
    served: ServedRow,
    active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<RouteRow> for Route {
    type Error = StoreError;

    fn try_from(row: RouteRow) -> Result<Self, Self::Error> {
        let served = ServedRoute::try_from(row.served)?;
        Ok(Route {
            id: served.id,
            tenant: served.tenant,
            service: served.service,
            env: served.env,
            version: served.version,
            url: served.url,
            active: row.active,
            weight: served.weight,
            revision: served.revision,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

pub(crate) fn routes(rows: Vec<RouteRow>) -> Result<Vec<Route>, StoreError> {
    rows.into_iter().map(Route::try_from).collect()
}

/// The rows of `rows` that the domain accepts, for the routing snapshot. One bad row
/// (stored behind the registry's back, or under an older, weaker rule) must not keep
/// every other route from being served, nor the service from starting: it is left out,
/// logged with its id and what is wrong, and counted in `rejected`.
pub(crate) fn accepted<R, T>(rows: Vec<R>, rejected: &IntCounter) -> Vec<T>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter()
        .filter_map(|row| match T::try_from(row) {
            Ok(route) => Some(route),
            Err(err) => {
                rejected.inc();
                tracing::error!(
                    error = %err,
                    "a stored route is invalid and is left out of the routing snapshot; \
                     correct or delete the row"
                );
                None
            }
        })
        .collect()
}

/// The columns every reading of a job has.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct JobRow {
    id: String,
    queue: String,
    kind: String,
    payload: String,
    tenant: Option<String>,
    attempts: i64,
    created_at: DateTime<Utc>,
}

/// A [`JobRow`] parsed: id, queue, payload, tenant, attempts.
type JobFields = (uuid::Uuid, Queue, serde_json::Value, Option<TenantId>, u32);

impl JobRow {
    fn parse(&self) -> Result<JobFields, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("job {}: {what}", self.id));
        Ok((
            self.id.parse().map_err(|_| corrupt("id"))?,
            self.queue.parse().map_err(|()| corrupt("queue"))?,
            serde_json::from_str(&self.payload).map_err(|_| corrupt("payload"))?,
            optional_tenant(self.tenant.as_deref()).map_err(|_| corrupt("tenant"))?,
            u32::try_from(self.attempts).map_err(|_| corrupt("attempts"))?,
        ))
    }
}

/// A job as a claim returns it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ClaimedRow {
    #[sqlx(flatten)]
    job: JobRow,
    max_attempts: i64,
}

impl TryFrom<ClaimedRow> for ClaimedJob {
    type Error = StoreError;

    fn try_from(row: ClaimedRow) -> Result<Self, Self::Error> {
        let (id, queue, payload, tenant, attempt) = row.job.parse()?;
        Ok(ClaimedJob {
            id,
            queue,
            payload,
            tenant,
            attempt,
            max_attempts: u32::try_from(row.max_attempts)
                .map_err(|_| StoreError::Corrupt(format!("job {id}: max attempts")))?,
            created_at: row.job.created_at,
            kind: row.job.kind,
        })
    }
}

/// A dead job as the dead-letter queue lists it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct DeadRow {
    #[sqlx(flatten)]
    job: JobRow,
    last_error: Option<String>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<DeadRow> for DeadJob {
    type Error = StoreError;

    fn try_from(row: DeadRow) -> Result<Self, Self::Error> {
        let (id, queue, payload, tenant, attempts) = row.job.parse()?;
        Ok(DeadJob {
            id,
            queue,
            payload,
            tenant,
            attempts,
            last_error: row.last_error,
            created_at: row.job.created_at,
            failed_at: row.updated_at,
            kind: row.job.kind,
        })
    }
}

/// Jobs of one queue in one state.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct CountRow {
    pub(crate) queue: String,
    pub(crate) state: String,
    pub(crate) jobs: i64,
}

/// A tenant column that may be null (an admin key's).
pub(crate) fn optional_tenant(
    raw: Option<&str>,
) -> Result<Option<TenantId>, tm_domain::DomainError> {
    raw.map(TenantId::parse).transpose()
}

/// An event of the outbox with its position, its id and JSON as text.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
    txid: i64,
    seq: i64,
    id: String,
    #[sqlx(rename = "type")]
    kind: String,
    tenant: Option<String>,
    subject: String,
    time: DateTime<Utc>,
    data: String,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl TryFrom<EventRow> for StoredEvent {
    type Error = StoreError;

    fn try_from(row: EventRow) -> Result<Self, Self::Error> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("event {}: {what}", row.seq));
        Ok(StoredEvent {
            position: EventPosition {
                txid: row.txid,
                seq: row.seq,
            },
            event: tm_domain::Event {
                id: row.id.parse().map_err(|_| corrupt("id"))?,
                kind: tm_domain::EventType::parse(&row.kind).ok_or_else(|| corrupt("type"))?,
                tenant: optional_tenant(row.tenant.as_deref()).map_err(|_| corrupt("tenant"))?,
                subject: row.subject,
                time: row.time,
                data: serde_json::from_str(&row.data).map_err(|_| corrupt("data"))?,
            },
            trace: row
                .traceparent
                .map(|traceparent| tm_telemetry::trace::TraceContext {
                    traceparent,
                    tracestate: row.tracestate,
                }),
        })
    }
}

/// The columns of `audit_log`, with JSON as text.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AuditRow {
    id: i64,
    at: DateTime<Utc>,
    actor: String,
    action: String,
    route_id: Option<String>,
    before: Option<String>,
    after: Option<String>,
    tenant: String,
    service: String,
    env: String,
    request_id: Option<String>,
    generation: Option<i64>,
    active_after: Option<String>,
    rollback_to: Option<i64>,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;

    fn try_from(row: AuditRow) -> Result<Self, Self::Error> {
        let corrupt =
            |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("audit row {}: {e}", row.id));
        fn json<T: serde::de::DeserializeOwned>(
            raw: Option<String>,
        ) -> Result<Option<T>, serde_json::Error> {
            raw.map(|s| serde_json::from_str(&s)).transpose()
        }
        let service = GroupKey {
            tenant: TenantId::parse(&row.tenant).map_err(|e| corrupt(&e))?,
            service: ServiceName::parse(&row.service).map_err(|e| corrupt(&e))?,
            env: EnvName::parse(&row.env).map_err(|e| corrupt(&e))?,
        };
        let active_after = json(row.active_after.clone()).map_err(|e| corrupt(&e))?;
        Ok(AuditEntry {
            id: row.id,
            at: row.at,
            route_id: row
                .route_id
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| corrupt(&e))?,
            service,
            actor: row.actor,
            request_id: row.request_id,
            action: row.action,
            generation: row.generation,
            active_after,
            rollback_to: row.rollback_to,
            before: json(row.before.clone()).map_err(|e| corrupt(&e))?,
            after: json(row.after.clone()).map_err(|e| corrupt(&e))?,
        })
    }
}

/// An entry of a service's activation history.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct StateRow {
    id: i64,
    active_after: String,
    rollback_to: Option<i64>,
}

impl TryFrom<StateRow> for StateEntry {
    type Error = StoreError;

    fn try_from(row: StateRow) -> Result<Self, Self::Error> {
        Ok(StateEntry {
            id: row.id,
            active: serde_json::from_str(&row.active_after)
                .map_err(|e| StoreError::Corrupt(format!("audit row {}: {e}", row.id)))?,
            rollback_to: row.rollback_to,
        })
    }
}

pub(crate) fn audit_json(route: Option<&Route>) -> Option<String> {
    route.map(|r| serde_json::to_string(r).expect("a route always serializes"))
}

/// The columns of `api_keys` (live keys), with `id` as text.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct KeyRow {
    id: String,
    name: String,
    role: String,
    tenant: Option<String>,
    secret_hash: Vec<u8>,
    created_at: DateTime<Utc>,
}

impl TryFrom<KeyRow> for KeyRecord {
    type Error = StoreError;

    fn try_from(row: KeyRow) -> Result<Self, Self::Error> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("api key {}: invalid {what}", row.id));
        let role: Role = row.role.parse().map_err(|_| corrupt("role"))?;
        let tenant = row
            .tenant
            .as_deref()
            .map(TenantId::parse)
            .transpose()
            .map_err(|_| corrupt("tenant"))?;
        Ok(KeyRecord {
            id: row.id.parse::<KeyId>().map_err(|_| corrupt("id"))?,
            grant: Grant::new(role, tenant).map_err(|_| corrupt("role and tenant"))?,
            secret_hash: SecretHash::from_bytes(&row.secret_hash)
                .ok_or_else(|| corrupt("secret hash"))?,
            name: row.name,
            created_at: row.created_at,
        })
    }
}

pub(crate) fn keys(rows: Vec<KeyRow>) -> Result<Vec<KeyRecord>, StoreError> {
    rows.into_iter().map(KeyRecord::try_from).collect()
}

/// The columns of `key_audit_log`, with `key_id` as text.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct KeyAuditRow {
    id: i64,
    at: DateTime<Utc>,
    actor: String,
    action: String,
    key_id: String,
    role: String,
    tenant: Option<String>,
}

impl TryFrom<KeyAuditRow> for KeyAuditEntry {
    type Error = StoreError;

    fn try_from(row: KeyAuditRow) -> Result<Self, Self::Error> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("key audit row {}: invalid {what}", row.id));
        Ok(KeyAuditEntry {
            id: row.id,
            at: row.at,
            action: match row.action.as_str() {
                "create" => KeyAuditAction::Create,
                "revoke" => KeyAuditAction::Revoke,
                _ => return Err(corrupt("action")),
            },
            key_id: row.key_id.parse().map_err(|_| corrupt("key id"))?,
            role: row.role.parse().map_err(|_| corrupt("role"))?,
            tenant: optional_tenant(row.tenant.as_deref()).map_err(|_| corrupt("tenant"))?,
            actor: row.actor,
        })
    }
}

/// Unix milliseconds of `at`, as idempotency records keep time.
pub(crate) fn unix_ms(at: std::time::SystemTime) -> i64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `Duration` in milliseconds, saturating.
pub(crate) fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// An `idempotency_keys` row as a record.
pub(crate) fn idempotency_record(
    fingerprint: String,
    response: Option<String>,
) -> Result<crate::IdempotencyRecord, StoreError> {
    let response = response
        .map(|json| {
            serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("idempotency record: {e}")))
        })
        .transpose()?;
    Ok(crate::IdempotencyRecord {
        fingerprint,
        response,
    })
}

pub(crate) fn response_json(response: &crate::StoredResponse) -> String {
    serde_json::to_string(response).expect("a stored response always serializes")
}

/// The columns of `webhooks`, with `id` and `event_types` as text.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct WebhookRow {
    id: String,
    tenant: String,
    url: String,
    event_types: String,
    description: Option<String>,
    sealed_secret: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<WebhookRow> for crate::WebhookRecord {
    type Error = StoreError;

    fn try_from(row: WebhookRow) -> Result<Self, Self::Error> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("webhook {}: invalid {what}", row.id));
        let types: Vec<String> =
            serde_json::from_str(&row.event_types).map_err(|_| corrupt("event types"))?;
        let event_types = types
            .iter()
            .map(|t| tm_domain::EventType::parse(t).ok_or_else(|| corrupt("event type")))
            .collect::<Result<_, _>>()?;
        Ok(crate::WebhookRecord {
            webhook: tm_domain::Webhook {
                id: row.id.parse().map_err(|_| corrupt("id"))?,
                tenant: TenantId::parse(&row.tenant).map_err(|_| corrupt("tenant"))?,
                url: row.url,
                event_types,
                description: row.description,
                created_at: row.created_at,
            },
            sealed_secret: row.sealed_secret,
        })
    }
}
