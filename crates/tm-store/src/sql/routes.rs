//! Routes and their audit rows: every write locks, checks, writes and audits in one
//! transaction.

use async_trait::async_trait;
use tm_domain::{
    now, Event, EventType, GroupKey, NewRoute, Route, RouteId, RouteKey, RoutePatch, ServedRoute,
    ServiceFacts, TenantId, Version,
};

use super::{conflict_or, fetch_optional, insert_sql, write_events, Backend, Conn, Value};
use std::collections::HashMap;

use crate::history::{rollback_target, StateEntry, Target};
use crate::row::{
    accepted, audit_json, routes, AuditRow, LoadedRow, RouteRow, ServedRow, ServiceRow, StateRow,
};
use crate::{
    check_access, ActivePage, Actor, AuditAction, AuditEntry, AuditFilter, ExpectedRevisions,
    LoadCursor, Page, ReadFrom, RolledBack, RouteFilter, RouteStore, ServingState, StoreError,
};

/// Routes per statement in a bulk import: 11 values each, under SQLite's 32766 and
/// PostgreSQL's 65535 bound values per statement.
const IMPORT_BATCH: usize = 1000;

const ROUTE_COLUMNS: [&str; 11] = [
    "id",
    "tenant",
    "service",
    "env",
    "version",
    "url",
    "active",
    "weight",
    "revision",
    "created_at",
    "updated_at",
];

const AUDIT_COLUMNS: [&str; 13] = [
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
    "active_after",
    "rollback_to",
];

const AUDIT_JSON: [&str; 3] = ["before", "after", "active_after"];

fn route_values(r: &Route) -> Vec<Value<'_>> {
    vec![
        Value::id(r.id.as_uuid()),
        Value::Text(r.tenant.as_str()),
        Value::Text(r.service.as_str()),
        Value::Text(r.env.as_str()),
        Value::Text(r.version.as_str()),
        Value::Text(r.url.as_str()),
        Value::Bool(r.active),
        Value::weight(r.weight.get()),
        Value::Int(r.revision),
        Value::Time(r.created_at),
        Value::Time(r.updated_at),
    ]
}

fn key_values(key: &RouteKey) -> Vec<Value<'_>> {
    vec![
        Value::Text(key.tenant.as_str()),
        Value::Text(key.service.as_str()),
        Value::Text(key.env.as_str()),
        Value::Text(key.version.as_str()),
    ]
}

pub(super) fn group_values(key: &GroupKey) -> Vec<Value<'_>> {
    vec![
        Value::Text(key.tenant.as_str()),
        Value::Text(key.service.as_str()),
        Value::Text(key.env.as_str()),
    ]
}

/// One change of a route, recorded twice in its transaction: as an audit row (the
/// route's history) and as an event in the outbox (what consumers are told).
struct Audit<'a> {
    actor: &'a Actor,
    action: AuditAction,
    before: Option<&'a Route>,
    after: Option<&'a Route>,
    /// The service's generation after the change.
    generation: i64,
    /// The service's active versions after the change, as a JSON array, if it changed
    /// which are.
    active_after: Option<String>,
    rollback_to: Option<i64>,
}

impl<'a> Audit<'a> {
    fn route(&self) -> &'a Route {
        self.after
            .or(self.before)
            .expect("a change has a route before or after")
    }

    fn values(&self, at: chrono::DateTime<chrono::Utc>) -> Vec<Value<'a>> {
        let route = self.route();
        vec![
            Value::Time(at),
            Value::Text(self.actor.as_str()),
            Value::Text(self.action.as_str()),
            Value::id(route.id.as_uuid()),
            Value::String(audit_json(self.before)),
            Value::String(audit_json(self.after)),
            Value::Text(route.tenant.as_str()),
            Value::Text(route.service.as_str()),
            Value::Text(route.env.as_str()),
            Value::OptText(self.actor.request_id()),
            Value::Int(self.generation),
            Value::String(self.active_after.clone()),
            Value::OptInt(self.rollback_to),
        ]
    }

    fn event(&self, at: chrono::DateTime<chrono::Utc>) -> Event {
        let kind = match self.action {
            AuditAction::Create => EventType::RouteCreated,
            AuditAction::Update => EventType::RouteUpdated,
            AuditAction::Activate => EventType::RouteActivated,
            AuditAction::Deactivate => EventType::RouteDeactivated,
            AuditAction::Delete => EventType::RouteDeleted,
            AuditAction::Rollback if self.after.is_some_and(|r| r.active) => {
                EventType::RouteActivated
            }
            AuditAction::Rollback => EventType::RouteDeactivated,
            // Written by the service policy's and health's own code, never as a route's.
            AuditAction::Policy | AuditAction::Health => EventType::RouteUpdated,
        };
        Event::route(kind, self.actor.as_str(), self.before, self.after, at)
    }

    async fn write<B: Backend>(&self, conn: &mut Conn<B>) -> Result<(), StoreError> {
        let at = now();
        let sql = insert_sql::<B>("audit_log", &AUDIT_COLUMNS, &AUDIT_JSON, 1, "");
        B::execute(conn, &sql, self.values(at)).await?;
        write_events::<B>(conn, &[self.event(at)]).await
    }
}

/// Whether a change from `before` to `after` changes which versions are active.
fn changes_activation(before: Option<&Route>, after: Option<&Route>) -> bool {
    before.is_some_and(|r| r.active) != after.is_some_and(|r| r.active)
}

/// Locks the service `key` until the transaction ends (making its row if it has none):
/// the writes of one service commit one at a time, in generation order.
pub(super) async fn lock_service<B: Backend>(
    conn: &mut Conn<B>,
    key: &GroupKey,
) -> Result<(), StoreError> {
    let sql = insert_sql::<B>(
        "services",
        &["tenant", "service", "env", "generation"],
        &[],
        1,
        " ON CONFLICT (tenant, service, env) DO UPDATE SET generation = services.generation",
    );
    let mut values = group_values(key);
    values.push(Value::Int(0));
    B::execute(conn, &sql, values).await?;
    Ok(())
}

/// Moves the generation of the service `key` on (locking its row, made if need be, until
/// the transaction ends); the new one and, when `with_active`, the service's active
/// versions as a JSON array, in one statement.
pub(super) async fn bump_service<B: Backend>(
    conn: &mut Conn<B>,
    key: &GroupKey,
    with_active: bool,
) -> Result<(i64, Option<String>), StoreError> {
    let mut values = group_values(key);
    values.push(Value::Bool(with_active));
    let rows: Vec<(i64, Option<String>)> =
        B::fetch_all(conn, &B::sql().bump_service, values).await?;
    rows.into_iter()
        .next()
        .ok_or_else(|| StoreError::Corrupt(format!("service {key:?} has no row")))
}

/// Records a change of one route of a locked service: moves the service's generation
/// on, and writes the audit row and the event.
async fn record<B: Backend>(
    conn: &mut Conn<B>,
    actor: &Actor,
    action: AuditAction,
    before: Option<&Route>,
    after: Option<&Route>,
) -> Result<(), StoreError> {
    let key = after.or(before).expect("a change has a route").group();
    let (generation, active_after) =
        bump_service::<B>(conn, &key, changes_activation(before, after)).await?;
    Audit {
        actor,
        action,
        before,
        after,
        generation,
        active_after,
        rollback_to: None,
    }
    .write::<B>(conn)
    .await
}

/// The route `sql` selects with `values`, or [`StoreError::NotFound`].
async fn route<B: Backend>(
    conn: &mut Conn<B>,
    sql: &str,
    values: Vec<Value<'_>>,
) -> Result<Route, StoreError> {
    let row: Option<RouteRow> = fetch_optional::<B, _>(conn, sql, values).await?;
    row.ok_or(StoreError::NotFound)?.try_into()
}

/// Stores `next` over `current` (same id), guarded by `current`'s revision.
async fn store_update<B: Backend>(
    conn: &mut Conn<B>,
    current: &Route,
    next: &Route,
) -> Result<(), StoreError> {
    let values = vec![
        Value::Text(next.url.as_str()),
        Value::Bool(next.active),
        Value::weight(next.weight.get()),
        Value::Int(next.revision),
        Value::Time(next.updated_at),
        Value::id(current.id.as_uuid()),
        Value::Int(current.revision),
    ];
    B::execute(conn, &B::sql().update_route, values).await?;
    Ok(())
}

/// Stores `next` over `current` (same id), guarded by `current`'s revision, and records
/// the change; the service must be locked.
async fn update<B: Backend>(
    conn: &mut Conn<B>,
    current: &Route,
    next: &Route,
    actor: &Actor,
    action: AuditAction,
) -> Result<(), StoreError> {
    store_update::<B>(conn, current, next).await?;
    record::<B>(conn, actor, action, Some(current), Some(next)).await
}

/// The route with `id`, its service locked, and the route locked too.
async fn lock_route_by_id<B: Backend>(
    conn: &mut Conn<B>,
    id: RouteId,
) -> Result<Route, StoreError> {
    let by_id = || vec![Value::id(id.as_uuid())];
    // A route never changes service: the one read unlocked names the service to lock
    // first (services before routes, as every write takes them).
    let seen = route::<B>(conn, &B::sql().route_by_id, by_id()).await?;
    lock_service::<B>(conn, &seen.group()).await?;
    route::<B>(conn, &B::sql().lock_route_by_id, by_id()).await
}

/// Locks the services of `routes` and moves each one's generation on, in key order (so
/// that two imports cannot wait on each other); each service with its new generation.
async fn lock_services<B: Backend>(
    conn: &mut Conn<B>,
    routes: &[Route],
) -> Result<Vec<(GroupKey, i64)>, StoreError> {
    let mut services: Vec<GroupKey> = routes.iter().map(Route::group).collect();
    services.sort_by(|a, b| {
        (a.tenant.as_str(), a.service.as_str(), a.env.as_str()).cmp(&(
            b.tenant.as_str(),
            b.service.as_str(),
            b.env.as_str(),
        ))
    });
    services.dedup();
    let sql = insert_sql::<B>(
        "services",
        &["tenant", "service", "env", "generation"],
        &[],
        services.len(),
        " ON CONFLICT (tenant, service, env) DO UPDATE \
          SET generation = services.generation + 1 \
          RETURNING tenant, service, env, generation",
    );
    let values = services
        .iter()
        .flat_map(|key| {
            let mut values = group_values(key);
            values.push(Value::Int(1));
            values
        })
        .collect();
    let rows: Vec<(String, String, String, i64)> = B::fetch_all(conn, &sql, values).await?;
    let generations: HashMap<(String, String, String), i64> = rows
        .into_iter()
        .map(|(t, s, e, generation)| ((t, s, e), generation))
        .collect();
    Ok(services
        .into_iter()
        .map(|key| {
            let named = (
                key.tenant.to_string(),
                key.service.to_string(),
                key.env.to_string(),
            );
            let generation = generations.get(&named).copied().unwrap_or(1);
            (key, generation)
        })
        .collect())
}

/// Stores `chunk` with one audit row each, made `at`; each service's generation moves on
/// once, and the last row of a service whose active versions changed records them.
async fn import_chunk<B: Backend>(
    conn: &mut Conn<B>,
    chunk: &[Route],
    actor: &Actor,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let services: HashMap<GroupKey, i64> =
        lock_services::<B>(conn, chunk).await?.into_iter().collect();
    let sql = insert_sql::<B>("routes", &ROUTE_COLUMNS, &[], chunk.len(), "");
    let values = chunk.iter().flat_map(route_values).collect();
    B::execute(conn, &sql, values).await.map_err(conflict_or)?;

    // Each route's service, and the last route of each service in the chunk (which
    // records the service's active versions): maps, as a chunk holds a thousand routes.
    let keys: Vec<GroupKey> = chunk.iter().map(Route::group).collect();
    let last_of: HashMap<&GroupKey, usize> = keys.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let mut activated: Vec<GroupKey> = chunk
        .iter()
        .zip(&keys)
        .filter(|(r, _)| r.active)
        .map(|(_, k)| k.clone())
        .collect();
    activated.sort_by(|a, b| {
        (a.tenant.as_str(), a.service.as_str(), a.env.as_str()).cmp(&(
            b.tenant.as_str(),
            b.service.as_str(),
            b.env.as_str(),
        ))
    });
    activated.dedup();
    let mut active: HashMap<GroupKey, Vec<String>> = HashMap::new();
    for batch in activated.chunks(B::GROUPS_PER_QUERY) {
        let (sql, values) = B::active_routes_in(batch);
        let rows: Vec<RouteRow> = B::fetch_all(conn, &sql, values).await?;
        for route in routes(rows)? {
            active
                .entry(route.group())
                .or_default()
                .push(route.version.as_str().to_owned());
        }
    }
    let audits: Vec<Audit<'_>> = chunk
        .iter()
        .zip(&keys)
        .enumerate()
        .map(|(i, (r, key))| {
            let active_after = active
                .get(key)
                .filter(|_| last_of.get(key) == Some(&i))
                .map(|versions| {
                    let mut versions = versions.clone();
                    versions.sort();
                    serde_json::to_string(&versions).expect("strings always serialize")
                });
            Audit {
                actor,
                action: AuditAction::Create,
                before: None,
                after: Some(r),
                generation: services.get(key).copied().unwrap_or(1),
                active_after,
                rollback_to: None,
            }
        })
        .collect();
    let sql = insert_sql::<B>("audit_log", &AUDIT_COLUMNS, &AUDIT_JSON, chunk.len(), "");
    let values = audits.iter().flat_map(|audit| audit.values(at)).collect();
    B::execute(conn, &sql, values).await?;
    let events: Vec<Event> = audits.iter().map(|audit| audit.event(at)).collect();
    write_events::<B>(conn, &events).await
}

/// A kept health, as a full load reads it.
#[derive(Debug, sqlx::FromRow)]
struct KeptHealthRow {
    id: String,
    state: String,
    last_online_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl KeptHealthRow {
    fn parse(self) -> Option<(RouteId, tm_domain::Health)> {
        let health = tm_domain::Health {
            healthy: self.state != "degraded",
            last_healthy: self.last_online_at.map_or(0, |at| {
                u32::try_from(at.timestamp().max(1)).unwrap_or(u32::MAX)
            }),
        };
        Some((self.id.parse().ok()?, health))
    }
}

/// The facts of the services `keys` that have a row.
async fn services_of<B: Backend>(
    conn: &mut Conn<B>,
    keys: &[GroupKey],
) -> Result<Vec<(GroupKey, ServiceFacts)>, StoreError> {
    let (sql, values) = B::services_in(keys);
    let rows: Vec<ServiceRow> = B::fetch_all(conn, &sql, values).await?;
    Ok(rows.into_iter().filter_map(ServiceRow::facts).collect())
}

/// The entry of the locked `service`'s activation history that a rollback restores.
async fn rollback_target_of<B: Backend>(
    conn: &mut Conn<B>,
    service: &GroupKey,
) -> Result<StateEntry, StoreError> {
    let rows: Vec<StateRow> =
        B::fetch_all(conn, &B::sql().service_history, group_values(service)).await?;
    let history: Vec<StateEntry> = rows
        .into_iter()
        .map(StateEntry::try_from)
        .collect::<Result<_, _>>()?;
    match rollback_target(&history) {
        Target::To(entry) => Ok(entry.clone()),
        Target::NoHistory => Err(StoreError::NoRollback(
            "no version of this service was ever switched on or off".into(),
        )),
        Target::AtFirst => Err(StoreError::NoRollback(
            "the service is in the first activation state it ever had".into(),
        )),
    }
}

#[async_trait]
impl<B: Backend> RouteStore for B {
    #[tracing::instrument(level = "debug", name = "store.create_route", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn create_route(&self, new: NewRoute, actor: &Actor) -> Result<Route, StoreError> {
        let route = new.into_route(RouteId::generate(), now());
        let sql = insert_sql::<B>(
            "routes",
            &ROUTE_COLUMNS,
            &[],
            1,
            " ON CONFLICT (tenant, service, env, version) DO NOTHING",
        );
        self.writer()
            .transaction(async |conn: &mut Conn<B>| {
                // A new route takes no lock another write waits on: the service's row is
                // locked by the record that follows (services before routes holds).
                let inserted = B::execute(conn, &sql, route_values(&route))
                    .await
                    .map_err(conflict_or)?;
                if inserted == 0 {
                    return Err(StoreError::Conflict);
                }
                record::<B>(conn, actor, AuditAction::Create, None, Some(&route)).await
            })
            .await?;
        Ok(route)
    }

    #[tracing::instrument(level = "debug", name = "store.import_routes", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn import_routes(&self, routes: &[Route], actor: &Actor) -> Result<(), StoreError> {
        let at = now();
        self.writer()
            .transaction(async |conn: &mut Conn<B>| {
                for chunk in routes.chunks(IMPORT_BATCH) {
                    import_chunk::<B>(conn, chunk, actor, at).await?;
                }
                Ok(())
            })
            .await
    }

    #[tracing::instrument(level = "debug", name = "store.set_active", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn set_active(
        &self,
        key: &RouteKey,
        active: bool,
        actor: &Actor,
    ) -> Result<Route, StoreError> {
        self.critical()
            .transaction(async |conn: &mut Conn<B>| {
                lock_service::<B>(conn, &key.group()).await?;
                let current =
                    route::<B>(conn, &B::sql().lock_route_by_key, key_values(key)).await?;
                let Some(next) = current.with_active(active, now()) else {
                    return Ok(current);
                };
                let action = if active {
                    AuditAction::Activate
                } else {
                    AuditAction::Deactivate
                };
                update::<B>(conn, &current, &next, actor, action).await?;
                Ok(next)
            })
            .await
    }

    #[tracing::instrument(level = "debug", name = "store.update_route", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn update_route(
        &self,
        id: RouteId,
        scope: Option<&TenantId>,
        patch: &RoutePatch,
        expected: ExpectedRevisions<'_>,
        actor: &Actor,
    ) -> Result<Route, StoreError> {
        self.writer()
            .transaction(async |conn: &mut Conn<B>| {
                let current = lock_route_by_id::<B>(conn, id).await?;
                check_access(&current, scope, expected)?;
                let Some(next) = current.with_patch(patch, now()) else {
                    return Ok(current);
                };
                update::<B>(conn, &current, &next, actor, AuditAction::Update).await?;
                Ok(next)
            })
            .await
    }

    #[tracing::instrument(level = "debug", name = "store.delete_route", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn delete_route(
        &self,
        id: RouteId,
        scope: Option<&TenantId>,
        expected: ExpectedRevisions<'_>,
        actor: &Actor,
    ) -> Result<Route, StoreError> {
        self.writer()
            .transaction(async |conn: &mut Conn<B>| {
                let current = lock_route_by_id::<B>(conn, id).await?;
                check_access(&current, scope, expected)?;
                B::execute(conn, &B::sql().delete_route, vec![Value::id(id.as_uuid())]).await?;
                record::<B>(conn, actor, AuditAction::Delete, Some(&current), None).await?;
                Ok(current)
            })
            .await
    }

    #[tracing::instrument(level = "debug", name = "store.get_route", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn get_route(&self, id: RouteId, from: ReadFrom) -> Result<Option<Route>, StoreError> {
        let (pool, via) = self.reader(from);
        let row: Option<RouteRow> = via.track(
            async {
                let mut conn = pool.acquire().await?;
                let by_id = vec![Value::id(id.as_uuid())];
                fetch_optional::<B, _>(&mut conn, &B::sql().route_by_id, by_id).await
            }
            .await,
        )?;
        row.map(Route::try_from).transpose()
    }

    #[tracing::instrument(level = "debug", name = "store.list_routes", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn list_routes(
        &self,
        filter: &RouteFilter,
        page: Page,
        from: ReadFrom,
    ) -> Result<Vec<Route>, StoreError> {
        let values = vec![
            Value::OptText(filter.tenant.as_ref().map(|t| t.as_str())),
            Value::OptText(filter.service.as_ref().map(|s| s.as_str())),
            Value::OptText(filter.env.as_ref().map(|e| e.as_str())),
            Value::OptBool(filter.active),
            Value::opt_id(page.after.map(|id| id.as_uuid())),
            Value::Int(i64::from(page.limit)),
        ];
        let (pool, via) = self.reader(from);
        let rows: Vec<RouteRow> = via.track(
            async {
                let mut conn = pool.acquire().await?;
                B::fetch_all(&mut conn, &B::sql().list_routes, values).await
            }
            .await,
        )?;
        routes(rows)
    }

    #[tracing::instrument(level = "debug", name = "store.active_routes_in_groups", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn active_routes_in_groups(&self, keys: &[GroupKey]) -> Result<ServingState, StoreError> {
        let pool = self.reader(ReadFrom::Primary).0;
        let mut conn = pool.acquire().await?;
        let mut found = ServingState::default();
        for chunk in keys.chunks(B::GROUPS_PER_QUERY) {
            let (sql, values) = B::served_in(chunk);
            let rows: Vec<LoadedRow> = B::fetch_all(&mut conn, &sql, values).await?;
            found
                .routes
                .extend(accepted(rows, &pool.counters().rejected_rows));
            found
                .services
                .extend(services_of::<B>(&mut conn, chunk).await?);
        }
        Ok(found)
    }

    #[tracing::instrument(level = "debug", name = "store.kept_health", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn kept_health(&self) -> Result<HashMap<RouteId, tm_domain::Health>, StoreError> {
        let mut conn = self.reader(ReadFrom::Primary).0.acquire().await?;
        let rows: Vec<KeptHealthRow> =
            B::fetch_all(&mut conn, &B::sql().all_health, Vec::new()).await?;
        Ok(rows.into_iter().filter_map(KeptHealthRow::parse).collect())
    }

    #[tracing::instrument(level = "debug", name = "store.active_routes_page", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn active_routes_page(
        &self,
        after: Option<&LoadCursor>,
        limit: u32,
    ) -> Result<ActivePage, StoreError> {
        let pool = self.reader(ReadFrom::Primary).0;
        let mut conn = pool.acquire().await?;
        let rows: Vec<ServedRow> = match after {
            None => {
                let values = vec![Value::Int(i64::from(limit))];
                B::fetch_all(&mut conn, &B::sql().active_routes_first, values).await?
            }
            Some(cursor) => {
                let values = vec![
                    Value::Text(&cursor.tenant),
                    Value::Text(&cursor.service),
                    Value::Text(&cursor.env),
                    Value::Text(&cursor.version),
                    Value::Int(i64::from(limit)),
                ];
                B::fetch_all(&mut conn, &B::sql().active_routes_after, values).await?
            }
        };
        // Whether there is more is told by the rows read, refused ones included.
        let next = match rows.last() {
            Some(last) if rows.len() >= limit as usize => Some(last.load_cursor()),
            _ => None,
        };
        // The page's services, read as one range of the services' key (the rows are in
        // key order): a lookup per service would cost more than the page itself.
        let range = rows.first().zip(rows.last()).map(|(first, last)| {
            let (a, b) = (first.load_cursor(), last.load_cursor());
            vec![
                Value::String(Some(a.tenant)),
                Value::String(Some(a.service)),
                Value::String(Some(a.env)),
                Value::String(Some(b.tenant)),
                Value::String(Some(b.service)),
                Value::String(Some(b.env)),
            ]
        });
        let mut services = HashMap::new();
        if let Some(values) = range {
            let rows: Vec<ServiceRow> =
                B::fetch_all(&mut conn, &B::sql().services_between, values).await?;
            services.extend(rows.into_iter().filter_map(ServiceRow::facts));
        }
        let routes: Vec<ServedRoute> = accepted(rows, &pool.counters().rejected_rows);
        Ok(ActivePage {
            routes,
            services,
            next,
        })
    }

    #[tracing::instrument(level = "debug", name = "store.audit_log", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn audit_log(&self, route_id: RouteId) -> Result<Vec<AuditEntry>, StoreError> {
        let mut conn = self.reader(ReadFrom::Primary).0.acquire().await?;
        let by_id = vec![Value::id(route_id.as_uuid())];
        let rows: Vec<AuditRow> = B::fetch_all(&mut conn, &B::sql().audit_log, by_id).await?;
        rows.into_iter().map(AuditEntry::try_from).collect()
    }

    #[tracing::instrument(level = "debug", name = "store.audit_after", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn audit_after(
        &self,
        filter: &AuditFilter,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Option<Vec<AuditEntry>>, StoreError> {
        let tenant = filter.tenant.as_ref().map(|t| t.as_str());
        let mut conn = self.reader(ReadFrom::Primary).0.acquire().await?;
        let (txid, id) = match after {
            None => (0, 0),
            Some(after) => {
                let values = vec![Value::Int(after), Value::OptText(tenant)];
                let found: Option<(i64, i64)> =
                    fetch_optional::<B, _>(&mut conn, &B::sql().audit_position, values).await?;
                match found {
                    Some(position) => position,
                    None => return Ok(None),
                }
            }
        };
        let sql = match (&filter.tenant, &filter.service, &filter.env) {
            (None, _, _) => &B::sql().audit_after,
            (Some(_), Some(_), Some(_)) => &B::sql().audit_after_in_service,
            (Some(_), _, _) => &B::sql().audit_after_in_tenant,
        };
        let values = vec![
            Value::OptText(tenant),
            Value::OptText(filter.service.as_ref().map(|s| s.as_str())),
            Value::OptText(filter.env.as_ref().map(|e| e.as_str())),
            Value::Int(txid),
            Value::Int(id),
            Value::Int(i64::from(limit)),
        ];
        let rows: Vec<AuditRow> = B::fetch_all(&mut conn, sql, values).await?;
        rows.into_iter()
            .map(AuditEntry::try_from)
            .collect::<Result<_, _>>()
            .map(Some)
    }

    #[tracing::instrument(level = "debug", name = "store.rollback", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn rollback(&self, service: &GroupKey, actor: &Actor) -> Result<RolledBack, StoreError> {
        self.critical()
            .transaction(async |conn: &mut Conn<B>| {
                lock_service::<B>(conn, service).await?;
                let target = rollback_target_of::<B>(conn, service).await?;
                let rows: Vec<RouteRow> =
                    B::fetch_all(conn, &B::sql().lock_service_routes, group_values(service))
                        .await?;
                let current = routes(rows)?;
                if let Some(gone) = target
                    .active
                    .iter()
                    .find(|v| !current.iter().any(|r| r.version.as_str() == v.as_str()))
                {
                    return Err(StoreError::NoRollback(format!(
                        "version {gone} of the state to restore (audit entry {}) was deleted \
                         since",
                        target.id
                    )));
                }
                let at = now();
                let switched: Vec<(&Route, Route)> = current
                    .iter()
                    .filter_map(|route| {
                        let wanted = target.active.iter().any(|v| v == route.version.as_str());
                        route.with_active(wanted, at).map(|next| (route, next))
                    })
                    .collect();
                if switched.is_empty() {
                    return Err(StoreError::NoRollback(format!(
                        "the service is in the state of audit entry {} already",
                        target.id
                    )));
                }
                let (generation, _) = bump_service::<B>(conn, service, false).await?;
                let active_after =
                    serde_json::to_string(&target.active).expect("strings always serialize");
                for (before, after) in &switched {
                    store_update::<B>(conn, before, after).await?;
                    Audit {
                        actor,
                        action: AuditAction::Rollback,
                        before: Some(before),
                        after: Some(after),
                        generation,
                        active_after: Some(active_after.clone()),
                        rollback_to: Some(target.id),
                    }
                    .write::<B>(conn)
                    .await?;
                }
                let active = target
                    .active
                    .iter()
                    .map(|v| Version::parse(v))
                    .collect::<Result<_, _>>()
                    .map_err(|e| StoreError::Corrupt(format!("audit row {}: {e}", target.id)))?;
                Ok(RolledBack {
                    active,
                    restored: target.id,
                    generation,
                    changed: switched.into_iter().map(|(_, after)| after).collect(),
                })
            })
            .await
    }
}
