//! Webhook subscriptions, their secrets sealed by the caller.

use async_trait::async_trait;
use tm_domain::{TenantId, Webhook, WebhookId};

use super::{fetch_optional, Backend, Conn, Value};
use crate::row::WebhookRow;
use crate::{ReadFrom, StoreError, WebhookRecord, WebhookStore};

fn records(rows: Vec<WebhookRow>) -> Result<Vec<WebhookRecord>, StoreError> {
    rows.into_iter().map(WebhookRecord::try_from).collect()
}

fn webhooks(rows: Vec<WebhookRow>) -> Result<Vec<Webhook>, StoreError> {
    Ok(records(rows)?.into_iter().map(|r| r.webhook).collect())
}

#[async_trait]
impl<B: Backend> WebhookStore for B {
    #[tracing::instrument(level = "debug", name = "store.create_webhook", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn create_webhook(
        &self,
        record: &WebhookRecord,
        max_per_tenant: u32,
    ) -> Result<(), StoreError> {
        let hook = &record.webhook;
        let types: Vec<&str> = hook.event_types.iter().map(|t| t.as_str()).collect();
        let types = serde_json::to_string(&types).expect("strings serialize");
        self.writer()
            .transaction(async |conn: &mut Conn<B>| {
                let tenant = hook.tenant.as_str();
                if let Some(lock) = &B::sql().lock_tenant_webhooks {
                    B::execute(conn, lock, vec![Value::Text(tenant)]).await?;
                }
                let count: Option<(i64,)> = fetch_optional::<B, _>(
                    conn,
                    &B::sql().count_tenant_webhooks,
                    vec![Value::Text(tenant)],
                )
                .await?;
                if count.is_some_and(|(held,)| held >= i64::from(max_per_tenant)) {
                    return Err(StoreError::TooManyWebhooks {
                        max: max_per_tenant,
                    });
                }
                let values = vec![
                    Value::id(hook.id.as_uuid()),
                    Value::Text(tenant),
                    Value::Text(&hook.url),
                    Value::String(Some(types.clone())),
                    Value::OptText(hook.description.as_deref()),
                    Value::Text(&record.sealed_secret),
                    Value::Time(hook.created_at),
                ];
                B::execute(conn, &B::sql().insert_webhook, values).await?;
                Ok(())
            })
            .await
    }

    #[tracing::instrument(level = "debug", name = "store.get_webhook", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn get_webhook(&self, id: WebhookId) -> Result<Option<WebhookRecord>, StoreError> {
        let mut conn = self.reader(ReadFrom::Primary).0.acquire().await?;
        let row: Option<WebhookRow> = fetch_optional::<B, _>(
            &mut conn,
            &B::sql().get_webhook,
            vec![Value::id(id.as_uuid())],
        )
        .await?;
        row.map(WebhookRecord::try_from).transpose()
    }

    #[tracing::instrument(level = "debug", name = "store.list_webhooks", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn list_webhooks(
        &self,
        tenant: Option<&TenantId>,
        after: Option<WebhookId>,
        limit: u32,
    ) -> Result<Vec<Webhook>, StoreError> {
        let mut conn = self.reader(ReadFrom::Primary).0.acquire().await?;
        let values = vec![
            Value::OptText(tenant.map(TenantId::as_str)),
            Value::opt_id(after.map(|id| id.as_uuid())),
            Value::Int(i64::from(limit)),
        ];
        webhooks(B::fetch_all(&mut conn, &B::sql().list_webhooks, values).await?)
    }

    #[tracing::instrument(level = "debug", name = "store.delete_webhook", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn delete_webhook(
        &self,
        id: WebhookId,
        tenant: Option<&TenantId>,
    ) -> Result<bool, StoreError> {
        let deleted = self
            .writer()
            .write(async |conn: &mut Conn<B>| {
                let values = vec![
                    Value::id(id.as_uuid()),
                    Value::OptText(tenant.map(TenantId::as_str)),
                ];
                B::execute(conn, &B::sql().delete_webhook, values).await
            })
            .await?;
        Ok(deleted > 0)
    }

    #[tracing::instrument(level = "debug", name = "store.webhooks_of", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn webhooks_of(&self, tenants: &[&TenantId]) -> Result<Vec<Webhook>, StoreError> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = tenants.iter().map(|t| t.as_str()).collect();
        let names = serde_json::to_string(&names).expect("strings serialize");
        let mut conn = self.reader(ReadFrom::Primary).0.acquire().await?;
        let rows = B::fetch_all(
            &mut conn,
            &B::sql().webhooks_of,
            vec![Value::String(Some(names))],
        )
        .await?;
        webhooks(rows)
    }

    #[tracing::instrument(level = "debug", name = "store.sealed_webhook_secrets", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn sealed_webhook_secrets(&self) -> Result<Vec<(WebhookId, String)>, StoreError> {
        let mut conn = self.reader(ReadFrom::Primary).0.acquire().await?;
        let rows: Vec<(String, String)> =
            B::fetch_all(&mut conn, &B::sql().webhook_secrets, Vec::new()).await?;
        rows.into_iter()
            .map(|(id, sealed)| {
                let id = id
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("webhook {id}: invalid id")))?;
                Ok((id, sealed))
            })
            .collect()
    }

    #[tracing::instrument(level = "debug", name = "store.reseal_webhook_secret", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn reseal_webhook_secret(
        &self,
        id: WebhookId,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        let changed = self
            .writer()
            .write(async |conn: &mut Conn<B>| {
                let values = vec![Value::id(id.as_uuid()), Value::Text(old), Value::Text(new)];
                B::execute(conn, &B::sql().reseal_webhook, values).await
            })
            .await?;
        Ok(changed == 1)
    }
}
