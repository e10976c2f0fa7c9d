//! Routes and their audit rows: every write locks, checks, writes and audits in one
//! transaction.

use async_trait::async_trait;
use tm_domain::{
    now, Event, EventType, GroupKey, NewRoute, Route, RouteId, RouteKey, RoutePatch, TenantId,
};

use super::{conflict_or, fetch_optional, insert_sql, write_events, Backend, Conn, Value};
use crate::row::{accepted, audit_json, routes, AuditRow, RouteRow, ServedRow};
use crate::{
    check_access, ActivePage, Actor, AuditAction, AuditEntry, ExpectedRevisions, LoadCursor, Page,
    ReadFrom, RouteFilter, RouteStore, StoreError,
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

const AUDIT_COLUMNS: [&str; 6] = ["at", "actor", "action", "route_id", "before", "after"];

const AUDIT_JSON: [&str; 2] = ["before", "after"];

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

/// One change of a route, recorded twice in its transaction: as an audit row (the
/// route's history) and as an event in the outbox (what consumers are told).
struct Audit<'a> {
    actor: &'a Actor,
    action: AuditAction,
    id: RouteId,
    before: Option<&'a Route>,
    after: Option<&'a Route>,
}

impl<'a> Audit<'a> {
    fn values(&self, at: chrono::DateTime<chrono::Utc>) -> Vec<Value<'a>> {
        vec![
            Value::Time(at),
            Value::Text(self.actor.as_str()),
            Value::Text(self.action.as_str()),
            Value::id(self.id.as_uuid()),
            Value::String(audit_json(self.before)),
            Value::String(audit_json(self.after)),
        ]
    }

    fn event(&self, at: chrono::DateTime<chrono::Utc>) -> Event {
        let kind = match self.action {
            AuditAction::Create => EventType::RouteCreated,
            AuditAction::Update => EventType::RouteUpdated,
            AuditAction::Activate => EventType::RouteActivated,
            AuditAction::Deactivate => EventType::RouteDeactivated,
            AuditAction::Delete => EventType::RouteDeleted,
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

/// The route `sql` selects with `values`, or [`StoreError::NotFound`].
async fn route<B: Backend>(
    conn: &mut Conn<B>,
    sql: &str,
    values: Vec<Value<'_>>,
) -> Result<Route, StoreError> {
    let row: Option<RouteRow> = fetch_optional::<B, _>(conn, sql, values).await?;
    row.ok_or(StoreError::NotFound)?.try_into()
}

/// Stores `next` over `current` (same id), guarded by `current`'s revision, with its
/// audit row.
async fn update<B: Backend>(
    conn: &mut Conn<B>,
    current: &Route,
    next: &Route,
    actor: &Actor,
    action: AuditAction,
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
    Audit {
        actor,
        action,
        id: next.id,
        before: Some(current),
        after: Some(next),
    }
    .write::<B>(conn)
    .await
}

/// Stores `chunk` with one audit row each, made `at`.
async fn import_chunk<B: Backend>(
    conn: &mut Conn<B>,
    chunk: &[Route],
    actor: &Actor,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let sql = insert_sql::<B>("routes", &ROUTE_COLUMNS, &[], chunk.len(), "");
    let values = chunk.iter().flat_map(route_values).collect();
    B::execute(conn, &sql, values).await.map_err(conflict_or)?;
    let audits: Vec<Audit<'_>> = chunk
        .iter()
        .map(|r| Audit {
            actor,
            action: AuditAction::Create,
            id: r.id,
            before: None,
            after: Some(r),
        })
        .collect();
    let sql = insert_sql::<B>("audit_log", &AUDIT_COLUMNS, &AUDIT_JSON, chunk.len(), "");
    let values = audits.iter().flat_map(|audit| audit.values(at)).collect();
    B::execute(conn, &sql, values).await?;
    let events: Vec<Event> = audits.iter().map(|audit| audit.event(at)).collect();
    write_events::<B>(conn, &events).await
}

#[async_trait]
impl<B: Backend> RouteStore for B {
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
                let inserted = B::execute(conn, &sql, route_values(&route))
                    .await
                    .map_err(conflict_or)?;
                if inserted == 0 {
                    return Err(StoreError::Conflict);
                }
                let audit = Audit {
                    actor,
                    action: AuditAction::Create,
                    id: route.id,
                    before: None,
                    after: Some(&route),
                };
                audit.write::<B>(conn).await
            })
            .await?;
        Ok(route)
    }

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

    async fn set_active(
        &self,
        key: &RouteKey,
        active: bool,
        actor: &Actor,
    ) -> Result<Route, StoreError> {
        self.critical()
            .transaction(async |conn: &mut Conn<B>| {
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
                let by_id = vec![Value::id(id.as_uuid())];
                let current = route::<B>(conn, &B::sql().lock_route_by_id, by_id).await?;
                check_access(&current, scope, expected)?;
                let Some(next) = current.with_patch(patch, now()) else {
                    return Ok(current);
                };
                update::<B>(conn, &current, &next, actor, AuditAction::Update).await?;
                Ok(next)
            })
            .await
    }

    async fn delete_route(
        &self,
        id: RouteId,
        scope: Option<&TenantId>,
        expected: ExpectedRevisions<'_>,
        actor: &Actor,
    ) -> Result<Route, StoreError> {
        self.writer()
            .transaction(async |conn: &mut Conn<B>| {
                let by_id = || vec![Value::id(id.as_uuid())];
                let current = route::<B>(conn, &B::sql().lock_route_by_id, by_id()).await?;
                check_access(&current, scope, expected)?;
                B::execute(conn, &B::sql().delete_route, by_id()).await?;
                let audit = Audit {
                    actor,
                    action: AuditAction::Delete,
                    id,
                    before: Some(&current),
                    after: None,
                };
                audit.write::<B>(conn).await?;
                Ok(current)
            })
            .await
    }

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

    async fn active_routes_in_groups(&self, keys: &[GroupKey]) -> Result<Vec<Route>, StoreError> {
        let pool = self.reader(ReadFrom::Primary).0;
        let mut conn = pool.acquire().await?;
        let mut found = Vec::new();
        for chunk in keys.chunks(B::GROUPS_PER_QUERY) {
            let (sql, values) = B::active_routes_in(chunk);
            let rows: Vec<RouteRow> = B::fetch_all(&mut conn, &sql, values).await?;
            found.extend(accepted(rows, &pool.counters().rejected_rows));
        }
        Ok(found)
    }

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
        Ok(ActivePage {
            routes: accepted(rows, &pool.counters().rejected_rows),
            next,
        })
    }

    async fn audit_log(&self, route_id: RouteId) -> Result<Vec<AuditEntry>, StoreError> {
        let mut conn = self.reader(ReadFrom::Primary).0.acquire().await?;
        let by_id = vec![Value::id(route_id.as_uuid())];
        let rows: Vec<AuditRow> = B::fetch_all(&mut conn, &B::sql().audit_log, by_id).await?;
        rows.into_iter().map(AuditEntry::try_from).collect()
    }
}
