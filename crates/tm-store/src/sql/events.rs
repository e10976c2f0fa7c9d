//! The outbox: events written in their change's transaction, and read back in commit
//! order by the event API (and the relays).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tm_domain::{Event, EventId, TenantId};
use tm_telemetry::trace::TraceContext;

use super::{fetch_optional, insert_sql, Backend, Conn, Value};
use crate::row::EventRow;
use crate::{EventFilter, EventPosition, EventStore, StoreError, StoredEvent};

const EVENT_COLUMNS: [&str; 8] = [
    "id",
    "type",
    "tenant",
    "subject",
    "time",
    "data",
    "traceparent",
    "tracestate",
];

const EVENT_JSON: [&str; 1] = ["data"];

/// Events per statement: 8 values each, far under either backend's bound.
const EVENTS_PER_STATEMENT: usize = 1000;

/// Events deleted per statement of a purge (the `purge_events` statements' LIMIT), so
/// that no statement runs long nor holds the writer for long.
const PURGE_BATCH: u64 = 10_000;

fn event_values<'a>(event: &'a Event, trace: Option<&'a TraceContext>) -> Vec<Value<'a>> {
    vec![
        Value::id(event.id.as_uuid()),
        Value::Text(event.kind.as_str()),
        Value::OptText(event.tenant.as_ref().map(TenantId::as_str)),
        Value::Text(&event.subject),
        Value::Time(event.time),
        Value::String(Some(event.data.to_string())),
        Value::OptText(trace.map(|t| t.traceparent.as_str())),
        Value::OptText(trace.and_then(|t| t.tracestate.as_deref())),
    ]
}

/// Adds `events` to the outbox, on the connection of the transaction that makes their
/// changes, with the trace context of the span writing them (when tracing is on).
pub(crate) async fn write_events<B: Backend>(
    conn: &mut Conn<B>,
    events: &[Event],
) -> Result<(), StoreError> {
    let trace = TraceContext::current();
    for chunk in events.chunks(EVENTS_PER_STATEMENT) {
        let sql = insert_sql::<B>("events", &EVENT_COLUMNS, &EVENT_JSON, chunk.len(), "");
        let values = chunk
            .iter()
            .flat_map(|event| event_values(event, trace.as_ref()))
            .collect();
        B::execute(conn, &sql, values).await?;
    }
    Ok(())
}

#[async_trait]
impl<B: Backend> EventStore for B {
    #[tracing::instrument(level = "debug", name = "store.event_position", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn event_position(
        &self,
        id: EventId,
        tenant: Option<&TenantId>,
    ) -> Result<Option<EventPosition>, StoreError> {
        let mut conn = self.reader(crate::ReadFrom::Primary).0.acquire().await?;
        let by_id = vec![
            Value::id(id.as_uuid()),
            Value::OptText(tenant.map(TenantId::as_str)),
        ];
        let row: Option<(i64, i64)> =
            fetch_optional::<B, _>(&mut conn, &B::sql().event_position, by_id).await?;
        Ok(row.map(|(txid, seq)| EventPosition { txid, seq }))
    }

    #[tracing::instrument(level = "debug", name = "store.events_after", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn events_after(
        &self,
        filter: &EventFilter,
        after: EventPosition,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut values = Vec::with_capacity(5);
        let sql = match &filter.tenant {
            Some(tenant) => {
                values.push(Value::Text(tenant.as_str()));
                &B::sql().events_after_in_tenant
            }
            None => &B::sql().events_after,
        };
        values.extend([
            Value::Bool(filter.key_events),
            Value::String(Some(after.txid.to_string())),
            Value::Int(after.seq),
            Value::Int(i64::from(limit)),
        ]);
        let mut conn = self.reader(crate::ReadFrom::Primary).0.acquire().await?;
        let rows: Vec<EventRow> = B::fetch_all(&mut conn, sql, values).await?;
        rows.into_iter().map(StoredEvent::try_from).collect()
    }

    #[tracing::instrument(level = "debug", name = "store.purge_events", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn purge_events(&self, made_before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut purged = 0;
        loop {
            let deleted = self
                .writer()
                .write(async |conn: &mut Conn<B>| {
                    let before = vec![Value::Time(made_before)];
                    B::execute(conn, &B::sql().purge_events, before).await
                })
                .await?;
            purged += deleted;
            if deleted < PURGE_BATCH {
                return Ok(purged);
            }
        }
    }

    #[tracing::instrument(level = "debug", name = "store.outbox_cursor", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn outbox_cursor(&self, sink: &str) -> Result<EventPosition, StoreError> {
        let mut conn = self.reader(crate::ReadFrom::Primary).0.acquire().await?;
        let row: Option<(i64, i64)> =
            fetch_optional::<B, _>(&mut conn, &B::sql().outbox_cursor, vec![Value::Text(sink)])
                .await?;
        Ok(
            row.map_or_else(EventPosition::default, |(txid, seq)| EventPosition {
                txid,
                seq,
            }),
        )
    }

    #[tracing::instrument(level = "debug", name = "store.advance_outbox_cursor", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn advance_outbox_cursor(
        &self,
        sink: &str,
        from: EventPosition,
        to: EventPosition,
    ) -> Result<bool, StoreError> {
        let moved = self
            .writer()
            .write(async |conn: &mut Conn<B>| {
                let values = vec![
                    Value::Text(sink),
                    Value::Int(from.txid),
                    Value::Int(from.seq),
                    Value::Int(to.txid),
                    Value::Int(to.seq),
                    Value::Time(tm_domain::now()),
                ];
                B::execute(conn, &B::sql().advance_outbox_cursor, values).await
            })
            .await?;
        Ok(moved == 1)
    }
}
