//! The storage contract, one trait per concern, and [`Store`], their sum: what the rest
//! of the registry holds as `Arc<dyn Store>`.
//!
//! Implementations keep a route and its audit row in one transaction, and report
//! conflicts and outages as [`StoreError`] variants.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tm_domain::{
    EventId, GroupKey, KeyId, NewRoute, Route, RouteId, RouteKey, RoutePatch, TenantId,
};
use uuid::Uuid;

use crate::{
    ActivePage, Actor, AuditEntry, AuditFilter, ChangePosition, ChangeSubscription, Changes,
    ClaimedJob, DeadJob, DeadPage, EventFilter, EventPosition, ExpectedRevisions, IdempotencyClaim,
    IdempotencyRecord, JobOutcome, KeyAuditEntry, KeyPage, KeyRecord, LoadCursor, NewJob, Page,
    QueueDepths, ReadFrom, ReplicaStatus, RolledBack, RouteFilter, ServingState, StoreError,
    StoredEvent, StoredResponse,
};

/// Routes and their audit log.
#[async_trait]
pub trait RouteStore: Send + Sync + 'static {
    /// Creates a route; [`StoreError::Conflict`] if its key exists.
    async fn create_route(&self, new: NewRoute, actor: &Actor) -> Result<Route, StoreError>;

    /// Stores many new routes at once (a bulk import), each with its audit row: all of
    /// them or none. A key that exists already fails the whole batch with
    /// [`StoreError::Conflict`].
    async fn import_routes(&self, routes: &[Route], actor: &Actor) -> Result<(), StoreError>;

    /// Switches a route on or off. Setting the state it already has changes nothing.
    async fn set_active(
        &self,
        key: &RouteKey,
        active: bool,
        actor: &Actor,
    ) -> Result<Route, StoreError>;

    /// Changes url and/or weight. A patch that changes nothing leaves the route as it is.
    /// With a `scope`, a route of another tenant is [`StoreError::NotFound`].
    async fn update_route(
        &self,
        id: RouteId,
        scope: Option<&TenantId>,
        patch: &RoutePatch,
        expected: ExpectedRevisions<'_>,
        actor: &Actor,
    ) -> Result<Route, StoreError>;

    /// Deletes a route and returns it as it was. With a `scope`, a route of another
    /// tenant is [`StoreError::NotFound`].
    async fn delete_route(
        &self,
        id: RouteId,
        scope: Option<&TenantId>,
        expected: ExpectedRevisions<'_>,
        actor: &Actor,
    ) -> Result<Route, StoreError>;

    /// The route with `id`, if there is one.
    async fn get_route(&self, id: RouteId, from: ReadFrom) -> Result<Option<Route>, StoreError>;

    /// A page of the routes `filter` matches, ordered by id.
    async fn list_routes(
        &self,
        filter: &RouteFilter,
        page: Page,
        from: ReadFrom,
    ) -> Result<Vec<Route>, StoreError>;

    /// The active routes of the given `(tenant, service, env)` groups, with their health,
    /// and the groups' facts; rows the domain refuses are left out, as by
    /// [`Self::active_routes_page`].
    async fn active_routes_in_groups(&self, keys: &[GroupKey]) -> Result<ServingState, StoreError>;

    /// The kept health of every route whose health is checked (not `stopped`), by route:
    /// what a full load of the snapshot gives its routes (a route not here is healthy).
    async fn kept_health(
        &self,
    ) -> Result<std::collections::HashMap<RouteId, tm_domain::Health>, StoreError>;

    /// Up to `limit` active routes in natural-key order, starting after `after` (from
    /// the first when `None`): what a routing snapshot is built from, one short query
    /// at a time, so that a full load of millions of routes neither holds them all at
    /// once nor runs one statement past its time-out. Rows the domain refuses are left
    /// out (see [`ActivePage::routes`]).
    async fn active_routes_page(
        &self,
        after: Option<&LoadCursor>,
        limit: u32,
    ) -> Result<ActivePage, StoreError>;

    /// The audit trail of one route, oldest first.
    async fn audit_log(&self, route_id: RouteId) -> Result<Vec<AuditEntry>, StoreError>;

    /// Up to `limit` audit entries that `filter` matches, after the entry `after` (from
    /// the first when none), in commit order: an entry is returned only once every entry
    /// before it is committed, so a reader that goes on from the last one it got never
    /// misses one. `None` when there is no entry `after` (of the filter's tenant).
    async fn audit_after(
        &self,
        filter: &AuditFilter,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Option<Vec<AuditEntry>>, StoreError>;

    /// Puts `service` back in the activation state it was in before its current one (see
    /// the activation history in the audit log), in one transaction: each route switched
    /// on or off is audited as a rollback. [`StoreError::NoRollback`] when there is no
    /// earlier state, or it cannot be restored (a version of it was deleted since).
    async fn rollback(&self, service: &GroupKey, actor: &Actor) -> Result<RolledBack, StoreError>;
}

/// Services' routing policies (and, later, their routes' health).
#[async_trait]
pub trait ServiceStore: Send + Sync + 'static {
    /// The policy of `service` and its generation: the default policy (and generation 0)
    /// for a service never written.
    async fn service_policy(
        &self,
        service: &GroupKey,
    ) -> Result<(tm_domain::ServicePolicy, i64), StoreError>;

    /// Sets the policy of `service` (the default one to reset it) in its lock: its
    /// generation moves on and the change is audited (`policy`, the policies before and
    /// after). Setting the policy it has changes nothing. The generation after.
    async fn set_service_policy(
        &self,
        service: &GroupKey,
        policy: &tm_domain::ServicePolicy,
        actor: &Actor,
    ) -> Result<i64, StoreError>;

    /// Every active route whose health its service's policy checks, with its health so
    /// far; and the routes whose kept health is not `stopped` (checked or not).
    async fn checked_routes(
        &self,
    ) -> Result<(Vec<crate::CheckedRoute>, Vec<crate::KeptHealth>), StoreError>;

    /// Keeps `health` as the health of route `id` (of service `key`). When `changed` (its
    /// state is another than the one kept), in the service's lock: the service's
    /// generation moves on and the change is audited (`health`, by `actor`), which is how
    /// every instance's snapshot hears of it. A route deleted meanwhile is let be.
    async fn save_health(
        &self,
        id: RouteId,
        key: &tm_domain::RouteKey,
        health: &crate::RouteHealth,
        changed: Option<tm_domain::HealthState>,
        actor: &Actor,
    ) -> Result<(), StoreError>;

    /// The kept health of route `id`, if it has any.
    async fn route_health(&self, id: RouteId) -> Result<Option<crate::RouteHealth>, StoreError>;

    /// The kept health of every active route, other than `stopped`, in key order.
    async fn active_health(&self) -> Result<Vec<crate::KeptHealth>, StoreError>;
}

/// API keys and their audit trail.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Stores a new key made by `actor`, with its audit row, in one transaction. With
    /// `max_per_tenant`, a key of a tenant that holds that many live keys already is
    /// refused with [`StoreError::TooManyKeys`] (keys without a tenant are not counted).
    async fn create_key(
        &self,
        record: &KeyRecord,
        actor: &Actor,
        max_per_tenant: Option<u32>,
    ) -> Result<(), StoreError>;

    /// Stores `record` only if no key was ever stored before; says whether it did. This
    /// is how the first admin key is made exactly once, however many instances start.
    async fn create_first_key(&self, record: &KeyRecord) -> Result<bool, StoreError>;

    /// A live (not revoked) key.
    async fn get_key(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError>;

    /// A page of the live keys, of one tenant or of all (admin keys included only for
    /// all), ordered by id.
    async fn list_keys(
        &self,
        tenant: Option<&TenantId>,
        page: KeyPage,
    ) -> Result<Vec<KeyRecord>, StoreError>;

    /// Revokes a live key on behalf of `actor`, with its audit row, in one transaction;
    /// [`StoreError::NotFound`] if there is none.
    async fn revoke_key(&self, id: KeyId, actor: &Actor) -> Result<(), StoreError>;

    /// The audit trail of one key, oldest first.
    async fn key_audit_log(&self, id: KeyId) -> Result<Vec<KeyAuditEntry>, StoreError>;

    /// Every live key: what the key ring is loaded from.
    async fn active_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;
}

/// What is kept of writes sent with an `Idempotency-Key`.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` within `scope` for a request with `fingerprint` (held as pending for
    /// `pending_for`), unless something is kept under it already, or `scope` holds
    /// `max_live` unexpired records.
    async fn claim_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        pending_for: std::time::Duration,
        max_live: u32,
    ) -> Result<IdempotencyClaim, StoreError>;

    /// Keeps the answer to a claimed key for `keep_for`.
    async fn complete_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        response: &StoredResponse,
        keep_for: std::time::Duration,
    ) -> Result<(), StoreError>;

    /// Gives up a pending claim (the request failed in a way worth retrying).
    async fn release_idempotency_key(&self, scope: &str, key: &str) -> Result<(), StoreError>;

    /// What is kept under `key`, if anything unexpired.
    async fn get_idempotency_key(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Deletes expired idempotency records; how many.
    async fn purge_idempotency_keys(&self) -> Result<u64, StoreError>;
}

/// The outbox: every change's event, written in the change's transaction by the route
/// and key writes above, read back in commit order.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Where the event with `id` stands, if it is still kept (and is `tenant`'s, if
    /// given).
    async fn event_position(
        &self,
        id: EventId,
        tenant: Option<&TenantId>,
    ) -> Result<Option<EventPosition>, StoreError>;

    /// Up to `limit` events that `filter` matches, after `after`, oldest first. An event
    /// is returned only once every event before it in this order is committed, so a
    /// reader that goes on from the last one it got never misses one.
    async fn events_after(
        &self,
        filter: &EventFilter,
        after: EventPosition,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Deletes the events made before `made_before`; how many.
    async fn purge_events(&self, made_before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Where the relay to `sink` stands: the position of the last event it handed on
    /// (the outbox's start if it never did).
    async fn outbox_cursor(&self, sink: &str) -> Result<EventPosition, StoreError>;

    /// Moves the relay cursor of `sink` from `from` to `to`; `false`, moving nothing, if
    /// it no longer stands at `from` (another relay moved it).
    async fn advance_outbox_cursor(
        &self,
        sink: &str,
        from: EventPosition,
        to: EventPosition,
    ) -> Result<bool, StoreError>;
}

/// The job queue: background work any instance may run, leased to one worker at a
/// time, retried, and kept as dead when it fails for good.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Enqueues `job`; `false` if a live (queued or running) job has its dedup key.
    async fn enqueue(&self, job: &NewJob) -> Result<bool, StoreError>;

    /// Leases to `worker`, for `lease`, up to `limit` due jobs of the given kinds,
    /// highest priority first, having first queued again the jobs whose lease ran out
    /// (their worker died). Each claim counts as an attempt. No two workers hold the same
    /// job. PostgreSQL times leases by its own clock.
    async fn claim_jobs(
        &self,
        worker: &str,
        kinds: &[&str],
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError>;

    /// Extends by `lease` the lease of a job `worker` holds in attempt `attempt`;
    /// `false` if it holds it no longer.
    async fn extend_lease(
        &self,
        id: Uuid,
        attempt: u32,
        worker: &str,
        lease: Duration,
    ) -> Result<bool, StoreError>;

    /// Records how attempt `attempt` of a job `worker` holds ended: deleted when done,
    /// queued again or dead when failed. `false` if `worker` held it no longer in that
    /// attempt (its lease ran out and the job may be another's now): nothing is changed
    /// then.
    async fn finish_job(
        &self,
        id: Uuid,
        attempt: u32,
        worker: &str,
        outcome: &JobOutcome,
    ) -> Result<bool, StoreError>;

    /// Live jobs per queue, and dead ones.
    async fn queue_depths(&self) -> Result<QueueDepths, StoreError>;

    /// A page of the dead-letter queue, in id order.
    async fn dead_jobs(&self, page: DeadPage<'_>) -> Result<Vec<DeadJob>, StoreError>;

    /// Queues a dead job (of `scope`, if given) again, due now, its attempts reset.
    /// [`StoreError::NotFound`] if there is no such dead job; [`StoreError::Conflict`]
    /// if a live job has its dedup key.
    async fn replay_dead_job(&self, id: Uuid, scope: Option<&TenantId>) -> Result<(), StoreError>;

    /// Deletes a dead job (of `scope`, if given); [`StoreError::NotFound`] if none.
    async fn purge_dead_job(&self, id: Uuid, scope: Option<&TenantId>) -> Result<(), StoreError>;

    /// Deletes every dead job (of `scope`, if given); how many.
    async fn purge_dead_jobs(&self, scope: Option<&TenantId>) -> Result<u64, StoreError>;
}

/// The change feed (the audit log read in commit order) and change notifications.
#[async_trait]
pub trait ChangeFeed: Send + Sync + 'static {
    /// Where the change feed stands: every change before this position is visible to
    /// any read that starts after this call.
    async fn change_position(&self) -> Result<ChangePosition, StoreError>;

    /// The services changed after `from`, oldest change first, reading at most `limit`
    /// changes.
    async fn changes_after(&self, from: ChangePosition, limit: u32) -> Result<Changes, StoreError>;

    /// Notifications of changes committed by any instance, where the backend sends
    /// them (PostgreSQL); `None` where it does not.
    async fn subscribe(&self) -> Result<Option<ChangeSubscription>, StoreError> {
        Ok(None)
    }
}

/// Health and operations: the backend, its pools and replicas.
#[async_trait]
pub trait StoreOps: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// A round trip to the database.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Connection figures of each pool.
    fn pool_stats(&self) -> Vec<tm_telemetry::PoolFigures>;

    /// Measures each read replica's lag and takes it out of (or back into) the rotation.
    /// Stores without replicas have nothing to check.
    async fn check_replicas(&self) -> Vec<ReplicaStatus> {
        Vec::new()
    }

    /// Closes every pool, waiting for connections in use to be returned.
    async fn close(&self);

    /// The concrete store, for tests that need its pools.
    #[cfg(feature = "test-support")]
    fn as_any(&self) -> &dyn std::any::Any;
}

/// Backups: a consistent export of every table, its check in a scratch store, its
/// restore, and the record of backup runs.
#[async_trait]
pub trait BackupStore: Send + Sync + 'static {
    /// Writes a consistent export of every table into `dir` (an empty directory), over a
    /// connection of its own, and describes it.
    async fn export(&self, dir: &std::path::Path) -> Result<crate::Export, StoreError>;

    /// Restores the export in `dir` into a scratch store, never into this one's tables,
    /// and summarises each table it then holds. Nothing of it is kept.
    async fn restore_scratch(
        &self,
        dir: &std::path::Path,
        export: &crate::Export,
    ) -> Result<Vec<crate::TableSummary>, StoreError>;

    /// Replaces every table's rows with the export's, in one transaction that commits
    /// only when the restored tables equal the export. [`StoreError::Refused`] for an
    /// export of another backend or of a newer schema, and, unless `force`, when the
    /// store holds routes, keys, audit rows or webhooks.
    async fn restore(
        &self,
        dir: &std::path::Path,
        export: &crate::Export,
        force: bool,
    ) -> Result<(), StoreError>;

    /// Records a backup run, whatever its outcome.
    async fn record_backup(&self, run: &crate::BackupRun) -> Result<(), StoreError>;

    /// What the record of runs shows, for the backup metrics.
    async fn backup_state(&self) -> Result<tm_telemetry::BackupState, StoreError>;
}

/// The registry's storage: every concern at once.
pub trait Store:
    RouteStore
    + ServiceStore
    + KeyStore
    + IdempotencyStore
    + EventStore
    + JobStore
    + WebhookStore
    + ChangeFeed
    + BackupStore
    + StoreOps
{
}

impl<T> Store for T where
    T: RouteStore
        + ServiceStore
        + KeyStore
        + IdempotencyStore
        + EventStore
        + JobStore
        + WebhookStore
        + ChangeFeed
        + BackupStore
        + StoreOps
{
}

/// Webhook subscriptions, their secrets sealed.
#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Stores `record`; refused with [`StoreError::TooManyWebhooks`] if its tenant
    /// holds `max_per_tenant` subscriptions already.
    async fn create_webhook(
        &self,
        record: &crate::WebhookRecord,
        max_per_tenant: u32,
    ) -> Result<(), StoreError>;

    async fn get_webhook(
        &self,
        id: tm_domain::WebhookId,
    ) -> Result<Option<crate::WebhookRecord>, StoreError>;

    /// Up to `limit` subscriptions (of `tenant`, if given) after `after`, in id order.
    async fn list_webhooks(
        &self,
        tenant: Option<&TenantId>,
        after: Option<tm_domain::WebhookId>,
        limit: u32,
    ) -> Result<Vec<tm_domain::Webhook>, StoreError>;

    /// Deletes a subscription (only if it is `tenant`'s, when given); whether it existed.
    async fn delete_webhook(
        &self,
        id: tm_domain::WebhookId,
        tenant: Option<&TenantId>,
    ) -> Result<bool, StoreError>;

    /// The subscriptions of `tenants`.
    async fn webhooks_of(
        &self,
        tenants: &[&TenantId],
    ) -> Result<Vec<tm_domain::Webhook>, StoreError>;

    /// Every subscription's id and sealed secret, for sealing them again under a new key.
    async fn sealed_webhook_secrets(
        &self,
    ) -> Result<Vec<(tm_domain::WebhookId, String)>, StoreError>;

    /// Replaces the sealed secret of `id` with `new` if it is still `old`; whether it was.
    async fn reseal_webhook_secret(
        &self,
        id: tm_domain::WebhookId,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError>;
}
