//! API keys with their audit rows, and the one-time claim of the first one.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tm_domain::{now, Event, EventType, KeyFacts, KeyId, Role, TenantId};

use super::{fetch_optional, write_events, Backend, Conn, Value};
use crate::row::{keys, optional_tenant, KeyAuditRow, KeyRow};
use crate::{
    Actor, KeyAuditAction, KeyAuditEntry, KeyPage, KeyRecord, KeyStore, ReadFrom, StoreError,
};

/// How the first admin key is named in the audit log: no caller made it.
const BOOTSTRAP_ACTOR: &str = "bootstrap";

async fn insert_key<B: Backend>(conn: &mut Conn<B>, record: &KeyRecord) -> Result<(), StoreError> {
    let values = vec![
        Value::id(record.id.as_uuid()),
        Value::Text(&record.name),
        Value::Text(record.grant.role().as_str()),
        Value::OptText(record.grant.tenant().map(|t| t.as_str())),
        Value::Bytes(record.secret_hash.as_bytes().as_slice()),
        Value::Time(record.created_at),
    ];
    B::execute(conn, &B::sql().insert_key, values).await?;
    Ok(())
}

/// What `actor` did to a key, recorded twice in its transaction: as a row of the key
/// audit log, and as an event in the outbox.
struct Audit<'a> {
    at: DateTime<Utc>,
    actor: &'a str,
    action: KeyAuditAction,
    key: KeyFacts<'a>,
}

impl Audit<'_> {
    async fn write<B: Backend>(&self, conn: &mut Conn<B>) -> Result<(), StoreError> {
        let values = vec![
            Value::Time(self.at),
            Value::Text(self.actor),
            Value::Text(self.action.as_str()),
            Value::id(self.key.id.as_uuid()),
            Value::Text(self.key.role.as_str()),
            Value::OptText(self.key.tenant.map(TenantId::as_str)),
        ];
        B::execute(conn, &B::sql().insert_key_audit, values).await?;
        let kind = match self.action {
            KeyAuditAction::Create => EventType::KeyCreated,
            KeyAuditAction::Revoke => EventType::KeyRevoked,
        };
        write_events::<B>(conn, &[Event::key(kind, self.actor, self.key, self.at)]).await
    }
}

/// Stores `record` with its creation audit row, made by `actor`.
async fn insert_audited<B: Backend>(
    conn: &mut Conn<B>,
    record: &KeyRecord,
    actor: &str,
) -> Result<(), StoreError> {
    insert_key::<B>(conn, record).await?;
    Audit {
        at: record.created_at,
        actor,
        action: KeyAuditAction::Create,
        key: KeyFacts {
            id: record.id,
            name: &record.name,
            role: record.grant.role(),
            tenant: record.grant.tenant(),
        },
    }
    .write::<B>(conn)
    .await
}

/// Fails with [`StoreError::TooManyKeys`] if `tenant` holds `max` live keys already.
/// Holds the tenant's key lock (where the backend needs one) until the transaction
/// ends, so that two creations cannot both see room for one more.
async fn check_room<B: Backend>(
    conn: &mut Conn<B>,
    tenant: &TenantId,
    max: u32,
) -> Result<(), StoreError> {
    if let Some(lock) = &B::sql().lock_tenant_keys {
        B::execute(conn, lock, vec![Value::Text(tenant.as_str())]).await?;
    }
    let count: Option<(i64,)> = fetch_optional::<B, _>(
        conn,
        &B::sql().count_tenant_keys,
        vec![Value::Text(tenant.as_str())],
    )
    .await?;
    if count.is_some_and(|(live,)| live >= i64::from(max)) {
        return Err(StoreError::TooManyKeys { max });
    }
    Ok(())
}

#[async_trait]
impl<B: Backend> KeyStore for B {
    #[tracing::instrument(level = "debug", name = "store.create_key", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn create_key(
        &self,
        record: &KeyRecord,
        actor: &Actor,
        max_per_tenant: Option<u32>,
    ) -> Result<(), StoreError> {
        self.writer()
            .transaction(async |conn: &mut Conn<B>| {
                if let (Some(max), Some(tenant)) = (max_per_tenant, record.grant.tenant()) {
                    check_room::<B>(conn, tenant, max).await?;
                }
                insert_audited::<B>(conn, record, actor.as_str()).await
            })
            .await
    }

    #[tracing::instrument(level = "debug", name = "store.create_first_key", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn create_first_key(&self, record: &KeyRecord) -> Result<bool, StoreError> {
        self.writer()
            .transaction(async |conn: &mut Conn<B>| {
                // Keys made before the bootstrap row existed (e.g. with the CLI) count too.
                // Counted first, so that a refusal has written nothing to roll back.
                let any: Option<(i64,)> =
                    fetch_optional::<B, _>(conn, "SELECT count(*) FROM api_keys", Vec::new())
                        .await?;
                if any.is_some_and(|(count,)| count > 0) {
                    return Ok(false);
                }
                let claim = vec![
                    Value::id(record.id.as_uuid()),
                    Value::Time(record.created_at),
                ];
                if B::execute(conn, &B::sql().claim_bootstrap, claim).await? == 0 {
                    return Ok(false);
                }
                insert_audited::<B>(conn, record, BOOTSTRAP_ACTOR).await?;
                Ok(true)
            })
            .await
    }

    #[tracing::instrument(level = "debug", name = "store.get_key", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn get_key(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let mut conn = self.reader(ReadFrom::Primary).0.acquire().await?;
        let by_id = vec![Value::id(id.as_uuid())];
        let row: Option<KeyRow> =
            fetch_optional::<B, _>(&mut conn, &B::sql().get_key, by_id).await?;
        row.map(KeyRecord::try_from).transpose()
    }

    #[tracing::instrument(level = "debug", name = "store.list_keys", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn list_keys(
        &self,
        tenant: Option<&TenantId>,
        page: KeyPage,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let mut conn = self.reader(ReadFrom::Primary).0.acquire().await?;
        let values = vec![
            Value::OptText(tenant.map(|t| t.as_str())),
            Value::opt_id(page.after.map(|id| id.as_uuid())),
            Value::Int(i64::from(page.limit)),
        ];
        let rows: Vec<KeyRow> = B::fetch_all(&mut conn, &B::sql().list_keys, values).await?;
        keys(rows)
    }

    #[tracing::instrument(level = "debug", name = "store.revoke_key", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn revoke_key(&self, id: KeyId, actor: &Actor) -> Result<(), StoreError> {
        self.writer()
            .transaction(async |conn: &mut Conn<B>| {
                let at = now();
                let values = vec![Value::Time(at), Value::id(id.as_uuid())];
                let revoked: Option<(String, String, Option<String>)> =
                    fetch_optional::<B, _>(conn, &B::sql().revoke_key, values).await?;
                let Some((name, role, tenant)) = revoked else {
                    return Err(StoreError::NotFound);
                };
                let corrupt = |what: &str| StoreError::Corrupt(format!("key {id}: {what}"));
                let role: Role = role.parse().map_err(|_| corrupt("role"))?;
                let tenant = optional_tenant(tenant.as_deref()).map_err(|_| corrupt("tenant"))?;
                Audit {
                    at,
                    actor: actor.as_str(),
                    action: KeyAuditAction::Revoke,
                    key: KeyFacts {
                        id,
                        name: &name,
                        role,
                        tenant: tenant.as_ref(),
                    },
                }
                .write::<B>(conn)
                .await
            })
            .await
    }

    #[tracing::instrument(level = "debug", name = "store.key_audit_log", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn key_audit_log(&self, id: KeyId) -> Result<Vec<KeyAuditEntry>, StoreError> {
        let mut conn = self.reader(ReadFrom::Primary).0.acquire().await?;
        let by_id = vec![Value::id(id.as_uuid())];
        let rows: Vec<KeyAuditRow> =
            B::fetch_all(&mut conn, &B::sql().key_audit_log, by_id).await?;
        rows.into_iter().map(KeyAuditEntry::try_from).collect()
    }

    #[tracing::instrument(level = "debug", name = "store.active_keys", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn active_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let mut conn = self.reader(ReadFrom::Primary).0.acquire().await?;
        let rows: Vec<KeyRow> = B::fetch_all(&mut conn, &B::sql().active_keys, Vec::new()).await?;
        keys(rows)
    }
}
