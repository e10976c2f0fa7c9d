//! The statements in SQLite's dialect: `?n` placeholders, ids and JSON as text, and no
//! row locks (`BEGIN IMMEDIATE` holds the whole database's write lock instead).

use std::sync::LazyLock;

use crate::sql::Statements;

/// Every column of `routes`, as the shared row type reads it.
pub(super) const ROUTE_COLUMNS: &str =
    "id, tenant, service, env, version, url, active, weight, revision, created_at, updated_at";

/// The columns of `routes` an answer is made of, and the route's health, as the
/// snapshot's row type reads them (from `routes` left joined with `route_health`).
pub(super) const SERVED_COLUMNS: &str =
    "id, tenant, service, env, version, url, weight, revision, \
                                         h.state AS health_state, h.last_online_at";

/// `routes` with each route's health, if it is checked.
pub(super) const SERVED_FROM: &str = "routes LEFT JOIN route_health h ON h.route_id = routes.id";

/// The columns of `routes` a full load reads (health comes from one read of
/// `route_health` for the whole load).
const LOADED_COLUMNS: &str = "id, tenant, service, env, version, url, weight, revision";

const WEBHOOK_COLUMNS: &str =
    "id, tenant, url, event_types, description, sealed_secret, created_at";
const KEY_COLUMNS: &str = "id, name, role, tenant, secret_hash, created_at";

/// Every column of `audit_log`, as the shared row type reads them.
const AUDIT_COLUMNS: &str = "id, at, actor, action, route_id, before, after, tenant, service, \
                             env, request_id, generation, active_after, rollback_to";

/// Audit entries after a position (?4 txid, always 0: writes commit in id order; ?5
/// id), with `filter` on the columns.
fn audit_after(filter: &str) -> String {
    format!(
        "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE {filter} AND ?4 = 0 AND id > ?5 \
         ORDER BY id LIMIT ?6"
    )
}

pub(super) static STATEMENTS: LazyLock<Statements> = LazyLock::new(|| {
    let route_by_id = format!("SELECT {ROUTE_COLUMNS} FROM routes WHERE id = ?1");
    Statements {
        lock_route_by_key: format!(
            "SELECT {ROUTE_COLUMNS} FROM routes \
             WHERE tenant = ?1 AND service = ?2 AND env = ?3 AND version = ?4"
        ),
        lock_route_by_id: route_by_id.clone(),
        route_by_id,
        update_route: "UPDATE routes SET url = ?1, active = ?2, weight = ?3, revision = ?4, \
                       updated_at = ?5 WHERE id = ?6 AND revision = ?7"
            .into(),
        delete_route: "DELETE FROM routes WHERE id = ?1".into(),
        list_routes: format!(
            "SELECT {ROUTE_COLUMNS} FROM routes \
             WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR service = ?2) \
               AND (?3 IS NULL OR env = ?3) \
               AND (?4 IS NULL OR active = ?4) AND (?5 IS NULL OR id > ?5) \
             ORDER BY id LIMIT ?6"
        ),
        active_routes_first: format!(
            "SELECT {LOADED_COLUMNS} FROM routes WHERE active = 1 \
             ORDER BY tenant, service, env, version LIMIT ?1"
        ),
        active_routes_after: format!(
            "SELECT {LOADED_COLUMNS} FROM routes WHERE active = 1 \
             AND (tenant, service, env, version) > (?1, ?2, ?3, ?4) \
             ORDER BY tenant, service, env, version LIMIT ?5"
        ),
        audit_log: format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE route_id = ?1 ORDER BY id"),
        audit_position: "SELECT 0 AS txid, id FROM audit_log \
                         WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)"
            .into(),
        audit_after: audit_after(
            "?1 IS NULL AND (?2 IS NULL OR service = ?2) AND (?3 IS NULL OR env = ?3)",
        ),
        audit_after_in_tenant: audit_after(
            "tenant = ?1 AND (?2 IS NULL OR service = ?2) AND (?3 IS NULL OR env = ?3)",
        ),
        audit_after_in_service: audit_after("tenant = ?1 AND service = ?2 AND env = ?3"),
        bump_service: "INSERT INTO services (tenant, service, env, generation) \
                       VALUES (?1, ?2, ?3, 1) ON CONFLICT (tenant, service, env) \
                       DO UPDATE SET generation = services.generation + 1 \
                       RETURNING generation, CASE WHEN ?4 THEN \
                         (SELECT json_group_array(version) FROM (SELECT version FROM routes \
                          WHERE tenant = ?1 AND service = ?2 AND env = ?3 AND active = 1 \
                          ORDER BY version)) END AS active_versions"
            .into(),
        service_policy: "SELECT generation, policy FROM services \
                         WHERE tenant = ?1 AND service = ?2 AND env = ?3"
            .into(),
        set_service_policy: "UPDATE services SET policy = ?4, generation = generation + 1 \
                             WHERE tenant = ?1 AND service = ?2 AND env = ?3 RETURNING generation"
            .into(),
        checked_routes: "SELECT r.id AS id, r.tenant, r.service, r.env, r.version, r.url, \
                         s.policy AS policy, h.state AS health_state, h.failures AS failures, \
                         h.last_error, h.checked_at, h.last_online_at \
                         FROM services s CROSS JOIN routes r \
                         LEFT JOIN route_health h ON h.route_id = r.id \
                         WHERE s.policy IS NOT NULL AND r.tenant = s.tenant \
                           AND r.service = s.service AND r.env = s.env AND r.active = 1"
            .into(),
        health_not_stopped: "SELECT h.route_id AS id, r.tenant, r.service, r.env, r.version, \
                             h.state FROM route_health h JOIN routes r ON r.id = h.route_id \
                             WHERE h.state <> 'stopped'"
            .into(),
        services_between: "SELECT tenant, service, env, generation, policy FROM services \
                           WHERE (tenant, service, env) >= (?1, ?2, ?3) \
                             AND (tenant, service, env) <= (?4, ?5, ?6)"
            .into(),
        all_health: "SELECT route_id AS id, state, last_online_at FROM route_health \
                     WHERE state <> 'stopped'"
            .into(),
        route_health: "SELECT state, failures, last_error, checked_at, last_online_at \
                       FROM route_health WHERE route_id = ?1"
            .into(),
        active_health: "SELECT r.tenant, r.service, r.env, r.version, h.state \
                        FROM route_health h CROSS JOIN routes r ON r.id = h.route_id \
                        WHERE r.active = 1 AND h.state <> 'stopped' \
                        ORDER BY r.tenant, r.service, r.env, r.version"
            .into(),
        lock_service_routes: format!(
            "SELECT {ROUTE_COLUMNS} FROM routes WHERE tenant = ?1 AND service = ?2 AND env = ?3 \
             ORDER BY version"
        ),
        service_history: "SELECT id, active_after, rollback_to \
                          FROM audit_log WHERE tenant = ?1 AND service = ?2 AND env = ?3 \
                            AND active_after IS NOT NULL ORDER BY id"
            .into(),
        claim_bootstrap: "INSERT INTO bootstrap (id, key_id, created_at) VALUES (1, ?1, ?2) \
                          ON CONFLICT (id) DO NOTHING"
            .into(),
        insert_key: "INSERT INTO api_keys (id, name, role, tenant, secret_hash, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            .into(),
        get_key: format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1 AND revoked_at IS NULL"),
        list_keys: format!(
            "SELECT {KEY_COLUMNS} FROM api_keys \
             WHERE revoked_at IS NULL AND (?1 IS NULL OR tenant = ?1) \
               AND (?2 IS NULL OR id > ?2) \
             ORDER BY id LIMIT ?3"
        ),
        revoke_key: "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL \
                     RETURNING name, role, tenant"
            .into(),
        count_tenant_keys: "SELECT count(*) FROM api_keys \
                            WHERE tenant = ?1 AND revoked_at IS NULL"
            .into(),
        // BEGIN IMMEDIATE already holds the database's write lock.
        lock_tenant_keys: None,
        insert_key_audit: "INSERT INTO key_audit_log (at, actor, action, key_id, role, tenant) \
                           VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            .into(),
        key_audit_log: "SELECT id, at, actor, action, key_id, role, tenant \
                        FROM key_audit_log WHERE key_id = ?1 ORDER BY id"
            .into(),
        active_keys: format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL"),
        idempotency_delete_expired:
            "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND expires_at <= ?3".into(),
        idempotency_claim: "INSERT INTO idempotency_keys (scope, key, fingerprint, response, \
                            expires_at) VALUES (?1, ?2, ?3, NULL, ?4) \
                            ON CONFLICT (scope, key) DO NOTHING"
            .into(),
        idempotency_get: "SELECT fingerprint, response FROM idempotency_keys \
                          WHERE scope = ?1 AND key = ?2"
            .into(),
        idempotency_complete: "INSERT INTO idempotency_keys (scope, key, fingerprint, \
                               response, expires_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                               ON CONFLICT (scope, key) DO UPDATE \
                               SET fingerprint = excluded.fingerprint, \
                                   response = excluded.response, \
                                   expires_at = excluded.expires_at"
            .into(),
        idempotency_release: "DELETE FROM idempotency_keys \
                              WHERE scope = ?1 AND key = ?2 AND response IS NULL"
            .into(),
        idempotency_count_live: "SELECT COUNT(*) FROM (SELECT 1 FROM idempotency_keys \
                                  WHERE scope = ?1 AND expires_at > ?2 LIMIT ?3) AS live"
            .into(),
        idempotency_get_unexpired: "SELECT fingerprint, response FROM idempotency_keys \
                                    WHERE scope = ?1 AND key = ?2 AND expires_at > ?3"
            .into(),
        idempotency_purge: "DELETE FROM idempotency_keys WHERE expires_at <= ?1".into(),
        event_position: "SELECT 0, seq FROM events \
                         WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)"
            .into(),
        // Writes are serialized: seq is commit order, and the txid value goes unused.
        events_after: "SELECT 0 AS txid, seq, id, type, tenant, subject, time, data, traceparent, \
                       tracestate FROM events \
                       WHERE (?1 OR type NOT LIKE 'key.%') AND ?2 IS NOT NULL AND seq > ?3 \
                       ORDER BY seq LIMIT ?4"
            .into(),
        events_after_in_tenant: "SELECT 0 AS txid, seq, id, type, tenant, subject, time, data, \
                                 traceparent, tracestate \
                                 FROM events WHERE tenant = ?1 AND (?2 OR type NOT LIKE 'key.%') \
                                   AND ?3 IS NOT NULL AND seq > ?4 \
                                 ORDER BY seq LIMIT ?5"
            .into(),
        purge_events: "DELETE FROM events WHERE seq IN \
                       (SELECT seq FROM events WHERE time < ?1 LIMIT 10000)"
            .into(),
        insert_webhook: "INSERT INTO webhooks (id, tenant, url, event_types, description, \
                         sealed_secret, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            .into(),
        count_tenant_webhooks: "SELECT count(*) FROM webhooks WHERE tenant = ?1".into(),
        // BEGIN IMMEDIATE already holds the database's write lock.
        lock_tenant_webhooks: None,
        get_webhook: format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?1"),
        list_webhooks: format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks \
             WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR id > ?2) \
             ORDER BY id LIMIT ?3"
        ),
        delete_webhook: "DELETE FROM webhooks WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)".into(),
        webhooks_of: format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks \
             WHERE tenant IN (SELECT value FROM json_each(?1))"
        ),
        webhook_secrets: "SELECT id, sealed_secret FROM webhooks ORDER BY id".into(),
        reseal_webhook:
            "UPDATE webhooks SET sealed_secret = ?3 WHERE id = ?1 AND sealed_secret = ?2".into(),
        insert_backup_run: "INSERT INTO backup_runs (id, started_at, finished_at, outcome, \
                            location, bytes, duration_ms, detail) \
                            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            .into(),
        outbox_cursor: "SELECT txid, seq FROM outbox_cursors WHERE sink = ?1".into(),
        advance_outbox_cursor: "INSERT INTO outbox_cursors (sink, txid, seq, updated_at) \
                                VALUES (?1, ?4, ?5, ?6) \
                                ON CONFLICT (sink) DO UPDATE \
                                SET txid = excluded.txid, seq = excluded.seq, \
                                    updated_at = excluded.updated_at \
                                WHERE outbox_cursors.txid = ?2 AND outbox_cursors.seq = ?3"
            .into(),
        // One host, one clock: the app's times are used; the lease in milliseconds (the
        // first value, which PostgreSQL uses with its own clock) is not.
        reap_leases: "UPDATE jobs SET state = 'queued', locked_until = NULL, locked_by = NULL, \
                      last_error = 'its lease ran out: its runner stopped or lost the database', \
                      updated_at = ?1 \
                      WHERE state = 'running' AND locked_until < ?1"
            .into(),
        // Writes are serialized: a claim's read and update are one atomic step.
        claim_jobs: "UPDATE jobs SET state = 'running', attempts = attempts + 1, \
                     locked_until = ?2, locked_by = ?3, updated_at = ?4 \
                     WHERE id IN (SELECT id FROM jobs \
                                  WHERE state = 'queued' AND run_at <= ?4 \
                                    AND kind IN (SELECT value FROM json_each(?6)) \
                                  ORDER BY priority, run_at LIMIT ?5) \
                       AND ?1 IS NOT NULL \
                     RETURNING id, queue, kind, payload, tenant, attempts, max_attempts, \
                               created_at"
            .into(),
        extend_lease: "UPDATE jobs SET locked_until = ?2 \
                       WHERE id = ?3 AND locked_by = ?4 AND attempts = ?5 AND state = 'running' \
                         AND ?1 IS NOT NULL"
            .into(),
        finish_done: "DELETE FROM jobs \
                      WHERE id = ?1 AND locked_by = ?2 AND attempts = ?3 AND state = 'running'"
            .into(),
        finish_failed:
            "UPDATE jobs SET state = ?1, run_at = ?2, last_error = ?3, updated_at = ?4, \
             locked_until = NULL, locked_by = NULL \
             WHERE id = ?5 AND locked_by = ?6 AND attempts = ?7 AND state = 'running'"
                .into(),
        count_jobs: "SELECT queue, state, count(*) AS jobs FROM jobs GROUP BY queue, state".into(),
        dead_jobs: "SELECT id, queue, kind, payload, tenant, attempts, last_error, created_at, \
                    updated_at FROM jobs \
                    WHERE state = 'dead' AND (?1 IS NULL OR tenant = ?1) \
                      AND (?2 IS NULL OR id > ?2) \
                    ORDER BY id LIMIT ?3"
            .into(),
        replay_dead_job: "UPDATE jobs SET state = 'queued', attempts = 0, run_at = ?1, \
                          updated_at = ?1 \
                          WHERE id = ?2 AND state = 'dead' AND (?3 IS NULL OR tenant = ?3)"
            .into(),
        purge_dead_job: "DELETE FROM jobs \
                         WHERE id = ?1 AND state = 'dead' AND (?2 IS NULL OR tenant = ?2)"
            .into(),
        purge_dead_jobs: "DELETE FROM jobs WHERE state = 'dead' AND (?1 IS NULL OR tenant = ?1)"
            .into(),
    }
});
