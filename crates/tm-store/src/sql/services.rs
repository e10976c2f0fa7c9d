//! Service policies: read, and set with their audit row in the service's own lock.

use async_trait::async_trait;
use tm_domain::{now, GroupKey, ServicePolicy};

use super::routes::{group_values, lock_service};
use super::{fetch_optional, insert_sql, Backend, Conn, Value};
use crate::row::parse_policy;
use crate::{Actor, AuditAction, ServiceStore, StoreError};

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
    async fn service_policy(&self, service: &GroupKey) -> Result<(ServicePolicy, i64), StoreError> {
        let mut conn = self.reader(crate::ReadFrom::Primary).0.acquire().await?;
        read::<B>(&mut conn, service).await
    }

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
}
