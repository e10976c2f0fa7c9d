//! API keys, and the one-time claim of the first one.

use async_trait::async_trait;
use tm_domain::{now, KeyId, TenantId};

use super::{fetch_optional, Backend, Conn, Value};
use crate::row::{keys, KeyRow};
use crate::{KeyRecord, KeyStore, ReadFrom, StoreError};

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

#[async_trait]
impl<B: Backend> KeyStore for B {
    async fn create_key(&self, record: &KeyRecord) -> Result<(), StoreError> {
        self.writer()
            .write(async |conn: &mut Conn<B>| insert_key::<B>(conn, record).await)
            .await
    }

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
                insert_key::<B>(conn, record).await?;
                Ok(true)
            })
            .await
    }

    async fn get_key(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let mut conn = self.reader(ReadFrom::Primary).0.acquire().await?;
        let by_id = vec![Value::id(id.as_uuid())];
        let row: Option<KeyRow> =
            fetch_optional::<B, _>(&mut conn, &B::sql().get_key, by_id).await?;
        row.map(KeyRecord::try_from).transpose()
    }

    async fn list_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<KeyRecord>, StoreError> {
        let mut conn = self.reader(ReadFrom::Primary).0.acquire().await?;
        let of = vec![Value::OptText(tenant.map(|t| t.as_str()))];
        let rows: Vec<KeyRow> = B::fetch_all(&mut conn, &B::sql().list_keys, of).await?;
        keys(rows)
    }

    async fn revoke_key(&self, id: KeyId) -> Result<(), StoreError> {
        self.writer()
            .write(async |conn: &mut Conn<B>| {
                let values = vec![Value::Time(now()), Value::id(id.as_uuid())];
                match B::execute(conn, &B::sql().revoke_key, values).await? {
                    0 => Err(StoreError::NotFound),
                    _ => Ok(()),
                }
            })
            .await
    }

    async fn active_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let mut conn = self.reader(ReadFrom::Primary).0.acquire().await?;
        let rows: Vec<KeyRow> = B::fetch_all(&mut conn, &B::sql().active_keys, Vec::new()).await?;
        keys(rows)
    }
}
