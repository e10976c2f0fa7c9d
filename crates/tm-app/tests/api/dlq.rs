//! The job queue as the API shows it: jobs that fail for good land in the dead-letter
//! queue, which admins (all) and tenant admins (their tenant's) list, replay and purge;
//! and no two claimers are ever leased the same job, on either backend.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tm_domain::TenantId;
use tm_store::{JobOutcome, NewJob, Queue};

use tm_testing::*;

/// An application whose runner looks for jobs every 20 ms.
async fn app() -> TestApp {
    spawn_app_with(|raw| raw.jobs.job_poll_interval = Duration::from_millis(20)).await
}

/// A job of a kind the application has no handler for (so its runner never claims it).
fn orphan(tenant: Option<&str>, n: u32) -> NewJob {
    NewJob {
        queue: Queue::Default,
        kind: "nobody.handles".into(),
        payload: json!({ "n": n }),
        dedup_key: None,
        tenant: tenant.map(|t| TenantId::parse(t).expect("a tenant")),
        max_attempts: 5,
        run_at: tm_domain::now(),
    }
}

/// Claims every queued orphan and reports it failed for good, as a runner would.
async fn bury_orphans(app: &TestApp) {
    let lease = Duration::from_secs(30);
    let claimed = app
        .store
        .claim_jobs("test-runner", &["nobody.handles"], 100, lease)
        .await
        .expect("claimed");
    for job in claimed {
        let dead = JobOutcome::Dead {
            error: "refused by the receiver".into(),
        };
        let held = app
            .store
            .finish_job(job.id, job.attempt, "test-runner", &dead)
            .await;
        assert!(held.expect("finished"));
    }
}

async fn dead(app: &TestApp, key: Option<&str>, query: &str) -> Vec<Value> {
    let path = format!("/api/v1/dlq{query}");
    let reply = match key {
        Some(key) => app.request_as(Some(key), Method::GET, &path, None).await,
        None => app.get(&path).await,
    };
    reply.assert_status(StatusCode::OK);
    reply.json()["items"].as_array().expect("items").clone()
}

#[tokio::test]
async fn dead_jobs_are_listed_replayed_and_purged_within_the_callers_tenant() {
    let app = app().await;
    for (tenant, n) in [(Some("acme"), 1), (Some("globex"), 2), (None, 3)] {
        assert!(app
            .store
            .enqueue(&orphan(tenant, n))
            .await
            .expect("enqueued"));
    }
    bury_orphans(&app).await;
    let all = dead(&app, None, "").await;
    assert_eq!(all.len(), 3);
    let job = all
        .iter()
        .find(|j| j["tenant"] == "acme")
        .expect("acme's")
        .clone();
    assert_eq!(job["kind"], "nobody.handles");
    assert_eq!(job["queue"], "default");
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["payload"], json!({"n": 1}));
    assert_eq!(job["last_error"], "refused by the receiver");
    assert!(job["failed_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    let id = job["id"].as_str().expect("id").to_owned();

    // A tenant admin sees and touches its tenant's only; a reader nothing.
    let acme = app.create_key("tenant_admin", Some("acme")).await;
    let globex = app.create_key("tenant_admin", Some("globex")).await;
    let reader = app.create_key("reader", Some("acme")).await;
    let seen = dead(&app, Some(&acme), "").await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["id"], id.as_str());
    app.request_as(Some(&acme), Method::GET, "/api/v1/dlq?tenant=globex", None)
        .await
        .assert_status(StatusCode::FORBIDDEN);
    app.request_as(Some(&reader), Method::GET, "/api/v1/dlq", None)
        .await
        .assert_status(StatusCode::FORBIDDEN);
    let replay = format!("/api/v1/dlq/{id}/replay");
    app.request_as(Some(&globex), Method::POST, &replay, None)
        .await
        .assert_status(StatusCode::NOT_FOUND);
    app.request_as(
        Some(&globex),
        Method::DELETE,
        &format!("/api/v1/dlq/{id}"),
        None,
    )
    .await
    .assert_status(StatusCode::NOT_FOUND);

    // Replayed: queued again (no longer dead) with its attempts reset.
    app.request_as(Some(&acme), Method::POST, &replay, None)
        .await
        .assert_status(StatusCode::NO_CONTENT);
    assert!(dead(&app, Some(&acme), "").await.is_empty());
    app.request_as(Some(&acme), Method::POST, &replay, None)
        .await
        .assert_status(StatusCode::NOT_FOUND);
    bury_orphans(&app).await;
    assert_eq!(dead(&app, Some(&acme), "").await[0]["attempts"], 1);

    // Purged one by one, then all of a tenant's, then all.
    app.request_as(
        Some(&acme),
        Method::DELETE,
        &format!("/api/v1/dlq/{id}"),
        None,
    )
    .await
    .assert_status(StatusCode::NO_CONTENT);
    app.request_as(
        Some(&acme),
        Method::DELETE,
        &format!("/api/v1/dlq/{id}"),
        None,
    )
    .await
    .assert_status(StatusCode::NOT_FOUND);
    let purged = app
        .request_as(Some(&globex), Method::DELETE, "/api/v1/dlq", None)
        .await;
    purged.assert_status(StatusCode::OK);
    assert_eq!(purged.json(), json!({"purged": 1}));
    let left = dead(&app, None, "").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["tenant"], Value::Null);
    let purged = app.request(Method::DELETE, "/api/v1/dlq", None).await;
    assert_eq!(purged.json(), json!({"purged": 1}));
    assert!(dead(&app, None, "").await.is_empty());

    for (path, status) in [
        ("/api/v1/dlq/not-an-id/replay", StatusCode::NOT_FOUND),
        ("/api/v1/dlq?limit=0", StatusCode::UNPROCESSABLE_ENTITY),
        ("/api/v1/dlq?cursor=nonsense", StatusCode::BAD_REQUEST),
    ] {
        let method = if path.ends_with("replay") {
            Method::POST
        } else {
            Method::GET
        };
        app.request(method, path, None).await.assert_status(status);
    }
}

#[tokio::test]
async fn the_dead_letter_queue_is_read_a_page_at_a_time() {
    let app = app().await;
    for n in 0..5 {
        app.store
            .enqueue(&orphan(Some("acme"), n))
            .await
            .expect("enqueued");
    }
    bury_orphans(&app).await;
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let page = app.get(&format!("/api/v1/dlq{query}")).await.json();
        seen.extend(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|j| j["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let all: Vec<Value> = dead(&app, None, "")
        .await
        .into_iter()
        .map(|j| j["id"].clone())
        .collect();
    assert_eq!(seen, all);
}

/// Claims race from many tasks at once: every job is leased to one claimer only. On
/// PostgreSQL this is `FOR UPDATE SKIP LOCKED`; on SQLite, the serialized writer.
#[tokio::test]
async fn concurrent_claims_never_lease_a_job_twice() {
    let app = spawn_app().await;
    for n in 0..200 {
        app.store.enqueue(&orphan(None, n)).await.expect("enqueued");
    }
    let lease = Duration::from_secs(60);
    let claimers = (0..8).map(|c| {
        let store = app.store.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let jobs = store
                    .claim_jobs(&format!("claimer-{c}"), &["nobody.handles"], 7, lease)
                    .await
                    .expect("claimed");
                if jobs.is_empty() {
                    return mine;
                }
                mine.extend(jobs.into_iter().map(|j| j.id));
            }
        })
    });
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.expect("claimer"));
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), distinct.len()), (200, 200));
}
