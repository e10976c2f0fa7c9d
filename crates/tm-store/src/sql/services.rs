//! Service policies: read, and set with their audit row in the service's own lock.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tm_domain::{
    now, EnvName, GroupKey, HealthState, RouteId, RouteKey, ServiceName, ServicePolicy, TenantId,
    UpstreamUrl, Version,
};

use super::routes::{group_values, lock_service};
use super::{fetch_optional, insert_sql, Backend, Conn, Value};
use crate::row::parse_policy;
use crate::{
    Actor, AuditAction, CheckedRoute, KeptHealth, ReadFrom, RouteHealth, ServiceStore, StoreError,
};

/// An active route of a service with a policy, with its health if it has any.
#[derive(Debug, sqlx::FromRow)]
struct CheckedRow {
    id: String,
    tenant: String,
    service: String,
    env: String,
    version: String,
    url: String,
    policy: Option<String>,
    health_state: Option<String>,
    failures: Option<i64>,
    last_error: Option<String>,
    checked_at: Option<DateTime<Utc>>,
    last_online_at: Option<DateTime<Utc>>,
}

/// A route's kept health.
#[derive(Debug, sqlx::FromRow)]
struct HealthRow {
    state: String,
    failures: i64,
    last_error: Option<String>,
    checked_at: Option<DateTime<Utc>>,
    last_online_at: Option<DateTime<Utc>>,
}

/// A kept health and its route's key.
#[derive(Debug, sqlx::FromRow)]
struct KeptRow {
    #[sqlx(default)]
    id: Option<String>,
    tenant: String,
    service: String,
    env: String,
    version: String,
    state: String,
}

fn route_key(tenant: &str, service: &str, env: &str, version: &str) -> Option<RouteKey> {
    Some(RouteKey {
        tenant: TenantId::parse(tenant).ok()?,
        service: ServiceName::parse(service).ok()?,
        env: EnvName::parse(env).ok()?,
        version: Version::parse(version).ok()?,
    })
}

impl KeptRow {
    fn parse(self) -> Option<KeptHealth> {
        Some(KeptHealth {
            id: self.id.as_deref().and_then(|id| id.parse().ok()),
            key: route_key(&self.tenant, &self.service, &self.env, &self.version)?,
            state: HealthState::parse(&self.state)?,
        })
    }
}

impl CheckedRow {
    /// The route and its check, if its policy checks it; rows the domain refuses (stored
    /// behind the registry's back) are left out.
    fn parse(self) -> Option<CheckedRoute> {
        let policy = parse_policy(self.policy.as_deref()?).ok()?;
        let check = policy.check_of(&self.version)?.clone();
        let health = match self.health_state.as_deref() {
            None => None,
            Some(state) => Some(RouteHealth {
                state: HealthState::parse(state)?,
                failures: u32::try_from(self.failures.unwrap_or(0)).unwrap_or(u32::MAX),
                last_error: self.last_error,
                checked_at: self.checked_at,
                last_online_at: self.last_online_at,
            }),
        };
        Some(CheckedRoute {
            id: self.id.parse().ok()?,
            key: route_key(&self.tenant, &self.service, &self.env, &self.version)?,
            url: UpstreamUrl::parse(&self.url).ok()?,
            check,
            health,
        })
    }
}

const HEALTH_COLUMNS: [&str; 7] = [
    "route_id",
    "state",
    "failures",
    "last_error",
    "checked_at",
    "last_online_at",
    "changed_at",
];

const HEALTH_AUDIT_COLUMNS: [&str; 11] = [
    "at",
    "actor",
    "action",
    "route_id",
    "before",
    "after",
    "tenant",
    "service",
    "env",
    "request_id",
    "generation",
];

/// Keeps `health` as route `id`'s.
async fn upsert_health<B: Backend>(
    conn: &mut Conn<B>,
    id: RouteId,
    health: &RouteHealth,
) -> Result<(), StoreError> {
    let sql = insert_sql::<B>(
        "route_health",
        &HEALTH_COLUMNS,
        &[],
        1,
        " ON CONFLICT (route_id) DO UPDATE SET state = excluded.state, \
          failures = excluded.failures, last_error = excluded.last_error, \
          checked_at = excluded.checked_at, \
          last_online_at = COALESCE(excluded.last_online_at, route_health.last_online_at), \
          changed_at = CASE WHEN route_health.state = excluded.state \
                       THEN route_health.changed_at ELSE excluded.changed_at END",
    );
    let values = vec![
        Value::id(id.as_uuid()),
        Value::Text(health.state.as_str()),
        Value::Int(i64::from(health.failures)),
        Value::OptText(health.last_error.as_deref()),
        Value::OptTime(health.checked_at),
        Value::OptTime(health.last_online_at),
        Value::Time(now()),
    ];
    B::execute(conn, &sql, values).await?;
    Ok(())
}

const POLICY_AUDIT_COLUMNS: [&str; 10] = [
    "at",
    "actor",
    "action",
    "before",
    "after",
    "tenant",
    "service",
    "env",
    "request_id",
    "generation",
];

/// A policy as stored: its JSON, none for the default.
fn stored(policy: &ServicePolicy) -> Option<String> {
    (*policy != ServicePolicy::default())
        .then(|| serde_json::to_string(policy).expect("a policy always serializes"))
}

/// The policy and generation of `service` as its row holds them (the defaults when it
/// has none).
async fn read<B: Backend>(
    conn: &mut Conn<B>,
    service: &GroupKey,
) -> Result<(ServicePolicy, i64), StoreError> {
    let row: Option<(i64, Option<String>)> =
        fetch_optional::<B, _>(conn, &B::sql().service_policy, group_values(service)).await?;
    let Some((generation, raw)) = row else {
        return Ok((ServicePolicy::default(), 0));
    };
    let policy = match raw.as_deref().map(parse_policy) {
        None => ServicePolicy::default(),
        Some(Ok(policy)) => policy,
        Some(Err(err)) => return Err(StoreError::Corrupt(format!("policy of {service:?}: {err}"))),
    };
    Ok((policy, generation))
}

#[async_trait]
impl<B: Backend> ServiceStore for B {
    #[tracing::instrument(level = "debug", name = "store.service_policy", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn service_policy(&self, service: &GroupKey) -> Result<(ServicePolicy, i64), StoreError> {
        let mut conn = self.reader(crate::ReadFrom::Primary).0.acquire().await?;
        read::<B>(&mut conn, service).await
    }

    #[tracing::instrument(level = "debug", name = "store.set_service_policy", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn set_service_policy(
        &self,
        service: &GroupKey,
        policy: &ServicePolicy,
        actor: &Actor,
    ) -> Result<i64, StoreError> {
        self.writer()
            .transaction(async |conn: &mut Conn<B>| {
                lock_service::<B>(conn, service).await?;
                let (current, generation) = read::<B>(conn, service).await?;
                if current == *policy {
                    return Ok(generation);
                }
                let mut values = group_values(service);
                values.push(Value::String(stored(policy)));
                let rows: Vec<(i64,)> =
                    B::fetch_all(conn, &B::sql().set_service_policy, values).await?;
                let generation = rows
                    .first()
                    .map(|(g,)| *g)
                    .ok_or_else(|| StoreError::Corrupt("the service was not locked".into()))?;
                let json = |p: &ServicePolicy| {
                    serde_json::to_string(p).expect("a policy always serializes")
                };
                let sql = insert_sql::<B>(
                    "audit_log",
                    &POLICY_AUDIT_COLUMNS,
                    &["before", "after"],
                    1,
                    "",
                );
                let values = vec![
                    Value::Time(now()),
                    Value::Text(actor.as_str()),
                    Value::Text(AuditAction::Policy.as_str()),
                    Value::String(Some(json(&current))),
                    Value::String(Some(json(policy))),
                    Value::Text(service.tenant.as_str()),
                    Value::Text(service.service.as_str()),
                    Value::Text(service.env.as_str()),
                    Value::OptText(actor.request_id()),
                    Value::Int(generation),
                ];
                B::execute(conn, &sql, values).await?;
                Ok(generation)
            })
            .await
    }

    #[tracing::instrument(level = "debug", name = "store.checked_routes", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn checked_routes(&self) -> Result<(Vec<CheckedRoute>, Vec<KeptHealth>), StoreError> {
        let mut conn = self.reader(ReadFrom::Primary).0.acquire().await?;
        let rows: Vec<CheckedRow> =
            B::fetch_all(&mut conn, &B::sql().checked_routes, Vec::new()).await?;
        let checked = rows.into_iter().filter_map(CheckedRow::parse).collect();
        let rows: Vec<KeptRow> =
            B::fetch_all(&mut conn, &B::sql().health_not_stopped, Vec::new()).await?;
        let kept = rows.into_iter().filter_map(KeptRow::parse).collect();
        Ok((checked, kept))
    }

    #[tracing::instrument(level = "debug", name = "store.save_health", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn save_health(
        &self,
        id: RouteId,
        key: &RouteKey,
        health: &RouteHealth,
        changed: Option<HealthState>,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let saved = self
            .writer()
            .transaction(async |conn: &mut Conn<B>| {
                let Some(before) = changed else {
                    return upsert_health::<B>(conn, id, health).await;
                };
                let service = key.group();
                lock_service::<B>(conn, &service).await?;
                upsert_health::<B>(conn, id, health).await?;
                let (generation, _) =
                    super::routes::bump_service::<B>(conn, &service, false).await?;
                let sql = insert_sql::<B>(
                    "audit_log",
                    &HEALTH_AUDIT_COLUMNS,
                    &["before", "after"],
                    1,
                    "",
                );
                let after = serde_json::json!({
                    "state": health.state.as_str(),
                    "failures": health.failures,
                    "last_error": health.last_error,
                });
                let values = vec![
                    Value::Time(now()),
                    Value::Text(actor.as_str()),
                    Value::Text(AuditAction::Health.as_str()),
                    Value::id(id.as_uuid()),
                    Value::String(Some(
                        serde_json::json!({"state": before.as_str()}).to_string(),
                    )),
                    Value::String(Some(after.to_string())),
                    Value::Text(service.tenant.as_str()),
                    Value::Text(service.service.as_str()),
                    Value::Text(service.env.as_str()),
                    Value::OptText(None),
                    Value::Int(generation),
                ];
                B::execute(conn, &sql, values).await?;
                Ok(())
            })
            .await;
        match saved {
            // The route was deleted meanwhile: its health goes with it.
            Err(StoreError::Other(err)) if crate::error::is_foreign_key_violation(&err) => Ok(()),
            other => other,
        }
    }

    #[tracing::instrument(level = "debug", name = "store.route_health", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn route_health(&self, id: RouteId) -> Result<Option<RouteHealth>, StoreError> {
        let mut conn = self.reader(ReadFrom::Primary).0.acquire().await?;
        let row: Option<HealthRow> = fetch_optional::<B, _>(
            &mut conn,
            &B::sql().route_health,
            vec![Value::id(id.as_uuid())],
        )
        .await?;
        row.map(|row| {
            Ok(RouteHealth {
                state: HealthState::parse(&row.state).ok_or_else(|| {
                    StoreError::Corrupt(format!("health of route {id}: {}", row.state))
                })?,
                failures: u32::try_from(row.failures).unwrap_or(u32::MAX),
                last_error: row.last_error,
                checked_at: row.checked_at,
                last_online_at: row.last_online_at,
            })
        })
        .transpose()
    }

    #[tracing::instrument(level = "debug", name = "store.active_health", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn active_health(&self) -> Result<Vec<KeptHealth>, StoreError> {
        let mut conn = self.reader(ReadFrom::Primary).0.acquire().await?;
        let rows: Vec<KeptRow> =
            B::fetch_all(&mut conn, &B::sql().active_health, Vec::new()).await?;
        Ok(rows.into_iter().filter_map(KeptRow::parse).collect())
    }
}
