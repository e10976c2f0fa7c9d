//! The statements in PostgreSQL's dialect: `$n` placeholders, ids as `uuid` (read back
//! as text), JSON as `jsonb`, and `FOR UPDATE` where a write reads the row it changes.

use std::sync::LazyLock;

use crate::sql::Statements;

/// Every column of `routes`, as the shared row type reads it.
const ROUTE_COLUMNS: &str =
    "id::text AS id, tenant, service, env, version, url, active, weight::int8 AS weight, \
     revision, created_at, updated_at";

/// The columns of `routes` an answer is made of, and the route's health, as the
/// snapshot's row type reads them (from `routes` left joined with `route_health`).
const SERVED_COLUMNS: &str = "id::text AS id, tenant, service, env, version, url, \
                              weight::int8 AS weight, revision, h.state AS health_state, \
                              h.last_online_at";

/// `routes` with each route's health, if it is checked.
const SERVED_FROM: &str = "routes LEFT JOIN route_health h ON h.route_id = routes.id";

/// The columns of `routes` a full load reads (health comes from one read of
/// `route_health` for the whole load: a join would cost a probe per route).
const LOADED_COLUMNS: &str = "id::text AS id, tenant, service, env, version, url, \
                              weight::int8 AS weight, revision";

const WEBHOOK_COLUMNS: &str = "id::text AS id, tenant, url, event_types::text AS event_types, \
                               description, sealed_secret, created_at";
const KEY_COLUMNS: &str = "id::text AS id, name, role, tenant, secret_hash, created_at";

/// Every column of `audit_log` but the transaction id, as the shared row type reads them.
const AUDIT_COLUMNS: &str = "id, at, actor, action, route_id::text AS route_id, \
                             before::text AS before, after::text AS after, tenant, service, env, \
                             request_id, generation, active_after::text AS active_after, \
                             rollback_to";

/// Audit entries after a position ($4 txid, $5 id), visible to every reader in commit
/// order (as the change feed reads them), with `filter` on the columns.
fn audit_after(filter: &str) -> String {
    format!(
        "SELECT {AUDIT_COLUMNS} FROM audit_log \
         WHERE {filter} AND (txid, id) > ($4::text::xid8, $5) \
           AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY txid, id LIMIT $6"
    )
}

/// The active routes of the groups bound as three arrays (tenants, services, envs).
pub(super) static ACTIVE_IN_GROUPS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {ROUTE_COLUMNS} FROM routes WHERE active AND (tenant, service, env) IN \
         (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))"
    )
});

/// The same, as the snapshot reads them (with their health).
pub(super) static SERVED_IN_GROUPS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {SERVED_COLUMNS} FROM {SERVED_FROM} WHERE active AND (tenant, service, env) IN \
         (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))"
    )
});

/// The services of the groups bound as three arrays (tenants, services, envs).
pub(super) const SERVICES_IN_GROUPS: &str =
    "SELECT tenant, service, env, generation, policy::text AS policy FROM services \
     WHERE (tenant, service, env) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))";

pub(super) static STATEMENTS: LazyLock<Statements> = LazyLock::new(|| Statements {
    lock_route_by_key: format!(
        "SELECT {ROUTE_COLUMNS} FROM routes \
         WHERE tenant = $1 AND service = $2 AND env = $3 AND version = $4 FOR UPDATE"
    ),
    lock_route_by_id: format!("SELECT {ROUTE_COLUMNS} FROM routes WHERE id = $1 FOR UPDATE"),
    route_by_id: format!("SELECT {ROUTE_COLUMNS} FROM routes WHERE id = $1"),
    update_route: "UPDATE routes SET url = $1, active = $2, weight = $3, revision = $4, \
                   updated_at = $5 WHERE id = $6 AND revision = $7"
        .into(),
    delete_route: "DELETE FROM routes WHERE id = $1".into(),
    list_routes: format!(
        "SELECT {ROUTE_COLUMNS} FROM routes \
         WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR service = $2) \
           AND ($3::text IS NULL OR env = $3) AND ($4::bool IS NULL OR active = $4) \
           AND ($5::uuid IS NULL OR id > $5) \
         ORDER BY id LIMIT $6"
    ),
    active_routes_first: format!(
        "SELECT {LOADED_COLUMNS} FROM routes WHERE active \
         ORDER BY tenant, service, env, version LIMIT $1"
    ),
    active_routes_after: format!(
        "SELECT {LOADED_COLUMNS} FROM routes WHERE active \
         AND (tenant, service, env, version) > ($1, $2, $3, $4) \
         ORDER BY tenant, service, env, version LIMIT $5"
    ),
    audit_log: format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE route_id = $1 ORDER BY id"),
    audit_position: "SELECT txid::text::int8 AS txid, id FROM audit_log \
                     WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)"
        .into(),
    audit_after: audit_after(
        "$1::text IS NULL AND ($2::text IS NULL OR service = $2) \
         AND ($3::text IS NULL OR env = $3)",
    ),
    audit_after_in_tenant: audit_after(
        "tenant = $1 AND ($2::text IS NULL OR service = $2) AND ($3::text IS NULL OR env = $3)",
    ),
    audit_after_in_service: audit_after("tenant = $1 AND service = $2 AND env = $3"),
    bump_service: "INSERT INTO services (tenant, service, env, generation) VALUES ($1, $2, $3, 1) \
                   ON CONFLICT (tenant, service, env) \
                   DO UPDATE SET generation = services.generation + 1 \
                   RETURNING generation, CASE WHEN $4::bool THEN COALESCE( \
                     (SELECT json_agg(version ORDER BY version)::text FROM routes \
                      WHERE tenant = $1 AND service = $2 AND env = $3 AND active), '[]') \
                   END AS active_versions"
        .into(),
    service_policy: "SELECT generation, policy::text AS policy FROM services \
                     WHERE tenant = $1 AND service = $2 AND env = $3"
        .into(),
    set_service_policy: "UPDATE services SET policy = $4::jsonb, generation = generation + 1 \
                         WHERE tenant = $1 AND service = $2 AND env = $3 RETURNING generation"
        .into(),
    checked_routes: "SELECT r.id::text AS id, r.tenant, r.service, r.env, r.version, r.url, \
                     s.policy::text AS policy, h.state AS health_state, \
                     h.failures::int8 AS failures, h.last_error, h.checked_at, h.last_online_at \
                     FROM services s JOIN routes r \
                       ON r.tenant = s.tenant AND r.service = s.service AND r.env = s.env \
                     LEFT JOIN route_health h ON h.route_id = r.id \
                     WHERE r.active AND s.policy IS NOT NULL"
        .into(),
    health_not_stopped: "SELECT h.route_id::text AS id, r.tenant, r.service, r.env, r.version, \
                         h.state FROM route_health h JOIN routes r ON r.id = h.route_id \
                         WHERE h.state <> 'stopped'"
        .into(),
    services_between: "SELECT tenant, service, env, generation, policy::text AS policy \
                       FROM services WHERE (tenant, service, env) >= ($1, $2, $3) \
                         AND (tenant, service, env) <= ($4, $5, $6)"
        .into(),
    all_health: "SELECT route_id::text AS id, state, last_online_at FROM route_health \
                 WHERE state <> 'stopped'"
        .into(),
    route_health: "SELECT state, failures::int8 AS failures, last_error, checked_at, \
                   last_online_at FROM route_health WHERE route_id = $1"
        .into(),
    active_health: "SELECT r.tenant, r.service, r.env, r.version, h.state \
                    FROM route_health h JOIN routes r ON r.id = h.route_id \
                    WHERE r.active AND h.state <> 'stopped' \
                    ORDER BY r.tenant, r.service, r.env, r.version"
        .into(),
    lock_service_routes: format!(
        "SELECT {ROUTE_COLUMNS} FROM routes WHERE tenant = $1 AND service = $2 AND env = $3 \
         ORDER BY version FOR UPDATE"
    ),
    service_history: "SELECT id, active_after::text AS active_after, rollback_to \
                      FROM audit_log WHERE tenant = $1 AND service = $2 AND env = $3 \
                        AND active_after IS NOT NULL ORDER BY id"
        .into(),
    claim_bootstrap: "INSERT INTO bootstrap (id, key_id, created_at) VALUES (1, $1, $2) \
                      ON CONFLICT (id) DO NOTHING"
        .into(),
    insert_key: "INSERT INTO api_keys (id, name, role, tenant, secret_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)"
        .into(),
    get_key: format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND revoked_at IS NULL"),
    list_keys: format!(
        "SELECT {KEY_COLUMNS} FROM api_keys \
         WHERE revoked_at IS NULL AND ($1::text IS NULL OR tenant = $1) \
           AND ($2::uuid IS NULL OR id > $2) \
         ORDER BY id LIMIT $3"
    ),
    revoke_key: "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
                 RETURNING name, role, tenant"
        .into(),
    count_tenant_keys: "SELECT count(*) FROM api_keys WHERE tenant = $1 AND revoked_at IS NULL"
        .into(),
    // A transaction-scoped lock per tenant (the two-key form, apart from the single-key
    // locks of migrations): concurrent creations of one tenant's keys count in turn.
    lock_tenant_keys: Some("SELECT pg_advisory_xact_lock(7411, hashtext($1))".into()),
    insert_key_audit: "INSERT INTO key_audit_log (at, actor, action, key_id, role, tenant) \
                       VALUES ($1, $2, $3, $4, $5, $6)"
        .into(),
    key_audit_log: "SELECT id, at, actor, action, key_id::text AS key_id, role, tenant \
                    FROM key_audit_log WHERE key_id = $1 ORDER BY id"
        .into(),
    active_keys: format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL"),
    idempotency_delete_expired:
        "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND expires_at <= $3".into(),
    idempotency_claim: "INSERT INTO idempotency_keys (scope, key, fingerprint, response, \
                        expires_at) VALUES ($1, $2, $3, NULL, $4) \
                        ON CONFLICT (scope, key) DO NOTHING"
        .into(),
    idempotency_get: "SELECT fingerprint, response FROM idempotency_keys \
                      WHERE scope = $1 AND key = $2"
        .into(),
    idempotency_complete: "INSERT INTO idempotency_keys (scope, key, fingerprint, response, \
                           expires_at) VALUES ($1, $2, $3, $4, $5) \
                           ON CONFLICT (scope, key) DO UPDATE \
                           SET fingerprint = excluded.fingerprint, \
                               response = excluded.response, \
                               expires_at = excluded.expires_at"
        .into(),
    idempotency_release: "DELETE FROM idempotency_keys \
                          WHERE scope = $1 AND key = $2 AND response IS NULL"
        .into(),
    idempotency_count_live: "SELECT COUNT(*) FROM (SELECT 1 FROM idempotency_keys \
                              WHERE scope = $1 AND expires_at > $2 LIMIT $3) AS live"
        .into(),
    idempotency_get_unexpired: "SELECT fingerprint, response FROM idempotency_keys \
                                WHERE scope = $1 AND key = $2 AND expires_at > $3"
        .into(),
    idempotency_purge: "DELETE FROM idempotency_keys WHERE expires_at <= $1".into(),
    event_position: "SELECT txid::text::int8, seq FROM events \
                     WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)"
        .into(),
    events_after: "SELECT txid::text::int8 AS txid, seq, id::text AS id, type, tenant, subject, \
                   time, data::text AS data, traceparent, tracestate FROM events \
                   WHERE ($1 OR type NOT LIKE 'key.%') AND (txid, seq) > ($2::text::xid8, $3) \
                     AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
                   ORDER BY txid, seq LIMIT $4"
        .into(),
    events_after_in_tenant: "SELECT txid::text::int8 AS txid, seq, id::text AS id, type, tenant, \
                             subject, time, data::text AS data, traceparent, tracestate \
                             FROM events \
                             WHERE tenant = $1 AND ($2 OR type NOT LIKE 'key.%') \
                               AND (txid, seq) > ($3::text::xid8, $4) \
                               AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
                             ORDER BY txid, seq LIMIT $5"
        .into(),
    purge_events: "DELETE FROM events WHERE seq IN \
                   (SELECT seq FROM events WHERE time < $1 LIMIT 10000)"
        .into(),
    insert_webhook: "INSERT INTO webhooks (id, tenant, url, event_types, description, \
                     sealed_secret, created_at) VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7)"
        .into(),
    count_tenant_webhooks: "SELECT count(*) FROM webhooks WHERE tenant = $1".into(),
    // As for keys, with a lock class of its own.
    lock_tenant_webhooks: Some("SELECT pg_advisory_xact_lock(7412, hashtext($1))".into()),
    get_webhook: format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1"),
    list_webhooks: format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks \
         WHERE ($1::text IS NULL OR tenant = $1) AND ($2::uuid IS NULL OR id > $2) \
         ORDER BY id LIMIT $3"
    ),
    delete_webhook: "DELETE FROM webhooks WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)"
        .into(),
    webhooks_of: format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks \
         WHERE tenant IN (SELECT jsonb_array_elements_text($1::jsonb))"
    ),
    webhook_secrets: "SELECT id::text, sealed_secret FROM webhooks ORDER BY id".into(),
    reseal_webhook: "UPDATE webhooks SET sealed_secret = $3 WHERE id = $1 AND sealed_secret = $2"
        .into(),
    insert_backup_run: "INSERT INTO backup_runs (id, started_at, finished_at, outcome, \
                        location, bytes, duration_ms, detail) \
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        .into(),
    outbox_cursor: "SELECT txid, seq FROM outbox_cursors WHERE sink = $1".into(),
    advance_outbox_cursor: "INSERT INTO outbox_cursors (sink, txid, seq, updated_at) \
                            VALUES ($1, $4, $5, $6) \
                            ON CONFLICT (sink) DO UPDATE \
                            SET txid = excluded.txid, seq = excluded.seq, \
                                updated_at = excluded.updated_at \
                            WHERE outbox_cursors.txid = $2 AND outbox_cursors.seq = $3"
        .into(),
    // Leases are timed by the database's clock, not the instances': an instance whose
    // clock runs ahead cannot take over a job whose lease is still running. The values
    // of the app's clock that SQLite uses are bound too, and left unused here.
    reap_leases: "UPDATE jobs SET state = 'queued', locked_until = NULL, locked_by = NULL, \
                  last_error = 'its lease ran out: its runner stopped or lost the database', \
                  updated_at = now() \
                  WHERE state = 'running' AND locked_until < now() AND $1::timestamptz IS NOT NULL"
        .into(),
    // The picked ids are materialized once: an IN (subquery ... LIMIT ... SKIP LOCKED)
    // may be run more than once by the planner, each run skipping the rows the last
    // one locked, and so update more rows than the limit.
    claim_jobs: "WITH picked AS MATERIALIZED ( \
                     SELECT id FROM jobs \
                     WHERE state = 'queued' AND run_at <= now() \
                       AND kind IN (SELECT jsonb_array_elements_text($6::jsonb)) \
                     ORDER BY priority, run_at LIMIT $5 FOR UPDATE SKIP LOCKED) \
                 UPDATE jobs SET state = 'running', attempts = attempts + 1, \
                     locked_until = now() + make_interval(secs => $1::float8 / 1000), \
                     locked_by = $3, updated_at = now() \
                 FROM picked \
                 WHERE jobs.id = picked.id \
                   AND $2::timestamptz IS NOT NULL AND $4::timestamptz IS NOT NULL \
                 RETURNING jobs.id::text AS id, queue, kind, payload::text AS payload, tenant, \
                           attempts::int8 AS attempts, max_attempts::int8 AS max_attempts, \
                           created_at"
        .into(),
    extend_lease:
        "UPDATE jobs SET locked_until = now() + make_interval(secs => $1::float8 / 1000) \
                   WHERE id = $3 AND locked_by = $4 AND attempts = $5 AND state = 'running' \
                     AND $2::timestamptz IS NOT NULL"
            .into(),
    finish_done: "DELETE FROM jobs \
                  WHERE id = $1 AND locked_by = $2 AND attempts = $3 AND state = 'running'"
        .into(),
    finish_failed: "UPDATE jobs SET state = $1, run_at = $2, last_error = $3, updated_at = $4, \
                    locked_until = NULL, locked_by = NULL \
                    WHERE id = $5 AND locked_by = $6 AND attempts = $7 AND state = 'running'"
        .into(),
    count_jobs: "SELECT queue, state, count(*) AS jobs FROM jobs GROUP BY queue, state".into(),
    dead_jobs: "SELECT id::text AS id, queue, kind, payload::text AS payload, tenant, \
                attempts::int8 AS attempts, last_error, created_at, updated_at FROM jobs \
                WHERE state = 'dead' AND ($1::text IS NULL OR tenant = $1) \
                  AND ($2::uuid IS NULL OR id > $2) \
                ORDER BY id LIMIT $3"
        .into(),
    replay_dead_job:
        "UPDATE jobs SET state = 'queued', attempts = 0, run_at = $1, updated_at = $1 \
                      WHERE id = $2 AND state = 'dead' AND ($3::text IS NULL OR tenant = $3)"
            .into(),
    purge_dead_job: "DELETE FROM jobs \
                     WHERE id = $1 AND state = 'dead' AND ($2::text IS NULL OR tenant = $2)"
        .into(),
    purge_dead_jobs: "DELETE FROM jobs WHERE state = 'dead' AND ($1::text IS NULL OR tenant = $1)"
        .into(),
});
