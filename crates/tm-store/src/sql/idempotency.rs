//! Idempotency records: claimed as pending (within a bound per caller), completed with
//! the answer, released, purged once expired. Times are Unix milliseconds.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{fetch_optional, Backend, Conn, Value};
use crate::row::{idempotency_record, millis, response_json, unix_ms};
use crate::{
    IdempotencyClaim, IdempotencyRecord, IdempotencyStore, ReadFrom, StoreError, StoredResponse,
};

#[async_trait]
impl<B: Backend> IdempotencyStore for B {
    #[tracing::instrument(level = "debug", name = "store.claim_idempotency_key", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn claim_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        pending_for: Duration,
        max_live: u32,
    ) -> Result<IdempotencyClaim, StoreError> {
        let now = unix_ms(SystemTime::now());
        let sql = B::sql();
        self.writer()
            .write(async |conn: &mut Conn<B>| {
                let expired = vec![Value::Text(scope), Value::Text(key), Value::Int(now)];
                B::execute(conn, &sql.idempotency_delete_expired, expired).await?;
                // A repeat gets what is kept, however many records its caller holds.
                let kept = vec![Value::Text(scope), Value::Text(key)];
                let row: Option<(String, Option<String>)> =
                    fetch_optional::<B, _>(conn, &sql.idempotency_get, kept).await?;
                if let Some((fingerprint, response)) = row {
                    return idempotency_record(fingerprint, response).map(IdempotencyClaim::Kept);
                }
                let bound = vec![
                    Value::Text(scope),
                    Value::Int(now),
                    Value::Int(i64::from(max_live)),
                ];
                let live: Option<(i64,)> =
                    fetch_optional::<B, _>(conn, &sql.idempotency_count_live, bound).await?;
                if live.is_some_and(|(live,)| live >= i64::from(max_live)) {
                    return Ok(IdempotencyClaim::Full);
                }
                let pending = vec![
                    Value::Text(scope),
                    Value::Text(key),
                    Value::Text(fingerprint),
                    Value::Int(now.saturating_add(millis(pending_for))),
                ];
                if B::execute(conn, &sql.idempotency_claim, pending).await? == 1 {
                    return Ok(IdempotencyClaim::Claimed);
                }
                // Claimed by a concurrent request since the look-up: that claim holds the
                // key, as if its request were still being answered.
                let kept = vec![Value::Text(scope), Value::Text(key)];
                let row: Option<(String, Option<String>)> =
                    fetch_optional::<B, _>(conn, &sql.idempotency_get, kept).await?;
                match row {
                    Some((fingerprint, response)) => {
                        idempotency_record(fingerprint, response).map(IdempotencyClaim::Kept)
                    }
                    None => Ok(IdempotencyClaim::Kept(IdempotencyRecord {
                        fingerprint: fingerprint.to_owned(),
                        response: None,
                    })),
                }
            })
            .await
    }

    #[tracing::instrument(level = "debug", name = "store.complete_idempotency_key", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn complete_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        response: &StoredResponse,
        keep_for: Duration,
    ) -> Result<(), StoreError> {
        let expires_at = unix_ms(SystemTime::now()).saturating_add(millis(keep_for));
        let values = vec![
            Value::Text(scope),
            Value::Text(key),
            Value::Text(fingerprint),
            Value::String(Some(response_json(response))),
            Value::Int(expires_at),
        ];
        self.writer()
            .write(async |conn: &mut Conn<B>| {
                B::execute(conn, &B::sql().idempotency_complete, values).await?;
                Ok(())
            })
            .await
    }

    #[tracing::instrument(level = "debug", name = "store.release_idempotency_key", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn release_idempotency_key(&self, scope: &str, key: &str) -> Result<(), StoreError> {
        self.writer()
            .write(async |conn: &mut Conn<B>| {
                let pending = vec![Value::Text(scope), Value::Text(key)];
                B::execute(conn, &B::sql().idempotency_release, pending).await?;
                Ok(())
            })
            .await
    }

    #[tracing::instrument(level = "debug", name = "store.get_idempotency_key", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn get_idempotency_key(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let mut conn = self.reader(ReadFrom::Primary).0.acquire().await?;
        let values = vec![
            Value::Text(scope),
            Value::Text(key),
            Value::Int(unix_ms(SystemTime::now())),
        ];
        let row: Option<(String, Option<String>)> =
            fetch_optional::<B, _>(&mut conn, &B::sql().idempotency_get_unexpired, values).await?;
        row.map(|(fingerprint, response)| idempotency_record(fingerprint, response))
            .transpose()
    }

    #[tracing::instrument(level = "debug", name = "store.purge_idempotency_keys", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn purge_idempotency_keys(&self) -> Result<u64, StoreError> {
        self.writer()
            .write(async |conn: &mut Conn<B>| {
                let now = vec![Value::Int(unix_ms(SystemTime::now()))];
                B::execute(conn, &B::sql().idempotency_purge, now).await
            })
            .await
    }
}
