//! Backups and restores, on the suite's backend: the drill (back up, destroy, restore,
//! compare every route, key and audit row), the refusals, verification that catches a
//! damaged backup, the record of runs behind the metrics, and the scheduled job.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tm_config::{BackupConfig, Retention};

use tm_testing::*;

fn settings(target: &std::path::Path) -> BackupConfig {
    BackupConfig {
        target: target.display().to_string(),
        interval: None,
        retention: Retention {
            daily: 7,
            weekly: 4,
            monthly: 12,
        },
    }
}

/// Routes of two tenants, changed every way a route changes (each change audited),
/// keys made and revoked, and a webhook.
async fn fill(app: &TestApp) {
    for (tenant, service) in [("acme", "billing"), ("acme", "search"), ("globex", "mail")] {
        for version in ["v1", "v2", "v3"] {
            app.create(
                tenant,
                service,
                "prod",
                version,
                &format!("http://{service}.{version}"),
            )
            .await;
        }
        app.activate(tenant, service, "prod", "v1")
            .await
            .assert_status(StatusCode::OK);
        app.activate(tenant, service, "prod", "v2")
            .await
            .assert_status(StatusCode::OK);
        app.deactivate(tenant, service, "prod", "v1")
            .await
            .assert_status(StatusCode::OK);
    }
    let route = &app.all_routes().await[0];
    let path = format!("/api/v1/routes/{}", route["id"].as_str().expect("id"));
    app.request(Method::PATCH, &path, Some(json!({"weight": 40})))
        .await
        .assert_status(StatusCode::OK);
    let last = app.all_routes().await.pop().expect("a route");
    let path = format!("/api/v1/routes/{}", last["id"].as_str().expect("id"));
    app.request(Method::DELETE, &path, None)
        .await
        .assert_status(StatusCode::NO_CONTENT);
    app.create_key("reader", Some("acme")).await;
    app.create_key("tenant_admin", Some("globex")).await;
    let keys = app.get("/api/v1/keys").await.json();
    let revoked = keys["items"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["role"] == "reader")
        .expect("the reader key")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.request(Method::DELETE, &format!("/api/v1/keys/{revoked}"), None)
        .await
        .assert_status(StatusCode::NO_CONTENT);
    app.request(
        Method::POST,
        "/api/v1/webhooks",
        Some(json!({"tenant": "acme", "url": "https://hooks.example.com/in"})),
    )
    .await
    .assert_status(StatusCode::CREATED);
}

/// Everything a user sees of the store: every route, key, audit row and webhook.
async fn everything(app: &TestApp) -> Value {
    let mut audit = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(after) => format!("/api/v1/audit?limit=100&after={after}"),
            None => "/api/v1/audit?limit=100".to_owned(),
        };
        let page = app.get(&path).await;
        page.assert_status(StatusCode::OK);
        let page = page.json();
        audit.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_after"].as_str() {
            Some(next) if Some(next) != after.as_deref() => after = Some(next.to_owned()),
            _ => break,
        }
    }
    json!({
        "routes": app.all_routes().await,
        "keys": app.get("/api/v1/keys").await.json()["items"],
        "audit": audit,
        "webhooks": app.get("/api/v1/webhooks").await.json()["items"],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_every_route_key_and_audit_row_into_a_new_store() {
    // One secrets key for both stores: the webhooks' secrets are sealed with it, and a
    // backup does not hold it.
    let secrets = tm_secrets::SecretKeys::generate_spec();
    let builder = TestApp::builder().configure(move |raw| {
        raw.webhooks.secrets_key = Some(secrets.clone());
        quiet_background(raw);
    });
    let app = builder.spawn().await;
    fill(&app).await;
    // 9 creates, 9 switches, a patch and a delete: 20 audit rows, each listed once the
    // audit log's order is settled (on PostgreSQL, once no older write is in flight).
    eventually(Duration::from_secs(5), "every audit row listed", || async {
        everything(&app).await["audit"]
            .as_array()
            .is_some_and(|rows| rows.len() == 20)
    })
    .await;
    let before = everything(&app).await;
    assert_eq!(before["routes"].as_array().expect("routes").len(), 8);

    let target = tempfile::tempdir().expect("temporary directory");
    let report = tm_backup::run(app.store.as_ref(), &settings(target.path()), "test")
        .await
        .expect("backed up");
    let manifest = &report.manifest;
    assert!(manifest.verified_at.is_some());
    assert_eq!(manifest.store.backend, backend());
    assert_eq!(manifest.store.rows("routes"), Some(8));
    assert!(manifest.bytes() > 0);
    let folder = target.path().join(&manifest.name);
    let stored: Value = serde_json::from_slice(
        &std::fs::read(folder.join("manifest.json")).expect("manifest written"),
    )
    .expect("manifest is JSON");
    assert_eq!(stored["version"], "test");
    for file in manifest.files.iter() {
        assert!(folder.join(&file.name).is_file(), "{}", file.name);
    }

    // Destroyed: the application and its database are gone.
    let admin_key = app.admin_key.clone();
    app.stop().await.expect("stops");

    // A new store, where someone made a route already: it is not replaced unless
    // forced, and then that route is gone.
    let fresh = builder.clone().admin_key(&admin_key).spawn().await;
    fresh
        .create("initech", "printing", "prod", "v1", "http://printer")
        .await;
    let location = report.location.clone();
    let refused = tm_backup::restore(fresh.store.as_ref(), &location, false)
        .await
        .expect_err("refused over a store that is not empty");
    assert!(refused.to_string().contains("not empty"), "{refused}");
    let restored = tm_backup::restore(fresh.store.as_ref(), &location, true)
        .await
        .expect("restored");
    assert_eq!(restored.name, manifest.name);
    // Started again on the restored store, it serves what the first one held.
    let back = builder.restart(fresh, |_| {}).await;
    assert_eq!(everything(&back).await, before);
    // And works on from there: numbers handed out before are not handed out again.
    back.create("acme", "billing", "prod", "v9", "http://billing.v9")
        .await;
    let audit = everything(&back).await["audit"].clone();
    let ids: std::collections::BTreeSet<String> = audit
        .as_array()
        .expect("audit")
        .iter()
        .map(|a| a["id"].to_string())
        .collect();
    assert_eq!(ids.len(), audit.as_array().expect("audit").len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_backup_fails_verification_and_is_not_restored() {
    let app = spawn_app_with(quiet_background).await;
    app.create("acme", "billing", "prod", "v1", "http://a")
        .await;
    let target = tempfile::tempdir().expect("temporary directory");
    let report = tm_backup::run(app.store.as_ref(), &settings(target.path()), "test")
        .await
        .expect("backed up");
    let target_of = tm_backup::Target::open(&target.path().display().to_string()).expect("target");
    tm_backup::verify(app.store.as_ref(), &target_of, &report.manifest)
        .await
        .expect("verifies");

    // One byte changed in the stored file: the checksum says so.
    let file = target
        .path()
        .join(&report.manifest.name)
        .join(&report.manifest.files[0].name);
    let mut bytes = std::fs::read(&file).expect("stored file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&file, &bytes).expect("damaged");
    let failed = tm_backup::verify(app.store.as_ref(), &target_of, &report.manifest)
        .await
        .expect_err("damage found");
    assert!(failed.to_string().contains("SHA-256"), "{failed}");
    let other = spawn_app_with(quiet_background).await;
    let refused = tm_backup::restore(other.store.as_ref(), &report.location, true)
        .await
        .expect_err("not restored");
    assert!(refused.to_string().contains("SHA-256"), "{refused}");
    // The store it was to replace is untouched.
    assert!(other.all_routes().await.is_empty());

    // A manifest that lies about a table's rows (the file itself intact) fails the
    // comparison after the scratch restore.
    std::fs::write(&file, {
        bytes[middle] ^= 0x01;
        &bytes
    })
    .expect("repaired");
    let mut lying = report.manifest.clone();
    let routes = lying
        .store
        .tables
        .iter_mut()
        .find(|t| t.name == "routes")
        .expect("routes");
    routes.rows += 1;
    let failed = tm_backup::verify(app.store.as_ref(), &target_of, &lying)
        .await
        .expect_err("difference found");
    assert!(failed.to_string().contains("table routes"), "{failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_run_is_recorded_and_shown_by_the_backup_metrics() {
    let app = spawn_app_with(|raw| {
        quiet_background(raw);
        raw.telemetry.pool_sample_interval = Duration::from_millis(100);
    })
    .await;
    assert_eq!(
        app.metric_value("backup_last_success_timestamp_seconds")
            .await,
        0.0
    );
    let target = tempfile::tempdir().expect("temporary directory");
    let before = tm_domain::now().timestamp() as f64;
    tm_backup::run(app.store.as_ref(), &settings(target.path()), "test")
        .await
        .expect("backed up");
    eventually(Duration::from_secs(5), "the backup sampled", || async {
        app.metric_value("backup_last_success_timestamp_seconds")
            .await
            > 0.0
    })
    .await;
    assert!(app.metric_value("backup_duration_seconds").await > 0.0);
    // A target that cannot be written: a run that failed.
    let blocked = target.path().join("a-file");
    std::fs::write(&blocked, b"not a directory").expect("file");
    tm_backup::run(app.store.as_ref(), &settings(&blocked), "test")
        .await
        .expect_err("failed");
    eventually(Duration::from_secs(5), "the metrics sampled", || async {
        app.metric_value("backup_failures_total").await == 1.0
    })
    .await;
    let last = app
        .metric_value("backup_last_success_timestamp_seconds")
        .await;
    assert!(
        last >= before && last <= tm_domain::now().timestamp() as f64 + 1.0,
        "{last}"
    );
    assert_eq!(app.metric_value("backup_verify_failures_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_job_backs_up_once_per_interval() {
    let target = tempfile::tempdir().expect("temporary directory");
    let path = target.path().display().to_string();
    let app = spawn_app_with(move |raw| {
        raw.backup.backup_target = Some(path.clone());
        raw.backup.backup_interval = Duration::from_secs(24 * 3600);
        raw.jobs.jobs_in_serve = true;
    })
    .await;
    // Scheduled at start: the first backup is made at once.
    eventually(Duration::from_secs(20), "the first backup", || async {
        std::fs::read_dir(target.path())
            .map(|d| d.count() == 1)
            .unwrap_or(false)
    })
    .await;
    eventually(Duration::from_secs(10), "the run recorded", || async {
        app.store
            .backup_state()
            .await
            .is_ok_and(|s| s.last_success_unix.is_some())
    })
    .await;
    // Started again, it finds the day's backup made and makes none.
    let app = TestApp::builder()
        .restart(app, {
            let path = target.path().display().to_string();
            move |raw| {
                raw.backup.backup_target = Some(path);
                raw.backup.backup_interval = Duration::from_secs(24 * 3600);
                raw.jobs.jobs_in_serve = true;
            }
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(std::fs::read_dir(target.path()).expect("target").count(), 1);
    drop(app);
}
