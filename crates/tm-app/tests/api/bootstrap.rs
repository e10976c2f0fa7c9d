//! The first admin key: its file is written before the key is stored, so a start that
//! cannot keep the key stores nothing, and a key that was kept but not stored is
//! stored by the next start. The file is never reached through a symbolic link.

#![cfg(unix)]

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use reqwest::StatusCode;
use tm_app::Application;
use tm_config::Config;
use tm_domain::{ApiKey, KeyId};
use tm_testing::*;
use tokio_util::sync::CancellationToken;

const FILE_NAME: &str = "bootstrap-admin.key";

/// A first start's configuration: SQLite and data in `dir`, no admin key configured.
fn first_start(dir: &Path) -> Config {
    TestApp::builder().config(dir)
}

/// Starts with `config`, expecting a refusal; the refusal with its causes.
async fn refused(config: Config) -> String {
    match Application::build(config).await {
        Ok(_) => panic!("the start was expected to fail"),
        Err(err) => format!("{:#}", anyhow::Error::new(err)),
    }
}

/// Starts with `config`; the admin key made by this start, checked to work.
async fn bootstrapped(config: Config) -> String {
    let app = Application::build(config).await.expect("starts");
    let key = app.bootstrap_key().expect("a first admin key").expose();
    let addr = app.local_addr();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(app.run_until(shutdown.clone()));
    let keys = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/keys"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("request");
    assert_eq!(keys.status(), StatusCode::OK, "the key is an admin key");
    shutdown.cancel();
    run.await.expect("run").expect("clean stop");
    key
}

fn file_key(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(FILE_NAME))
        .expect("key file")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn a_symbolic_link_at_the_key_path_stops_the_start_and_stores_no_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("elsewhere");
    let link = dir.path().join(FILE_NAME);
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let why = refused(first_start(dir.path())).await;
    assert!(why.contains("symbolic link"), "{why}");
    assert!(!target.exists(), "the link was not followed");
    // Nothing was stored: once the link is gone, a start makes the first key.
    std::fs::remove_file(&link).expect("remove link");
    let key = bootstrapped(first_start(dir.path())).await;
    assert_eq!(file_key(dir.path()), key);
}

#[tokio::test]
async fn a_start_that_cannot_write_the_key_file_stores_no_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = first_start(dir.path());
    // A data directory that cannot be made (its parent is a file), even by root; the
    // database stays where it was.
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, "").expect("file");
    let data_dir = std::mem::replace(&mut config.data_dir, blocker.join("data"));
    // The secret key is configured, so the key file is the first thing written there.
    config.webhooks.secret_keys =
        tm_config::SecretKeySource::Given(tm_secrets::SecretKeys::generate_spec().into());
    let why = refused(config.clone()).await;
    assert!(why.contains("bootstrap admin key"), "{why}");
    // The next start, able to write, still makes the first key.
    config.data_dir = data_dir;
    let key = bootstrapped(config).await;
    assert_eq!(file_key(dir.path()), key);
}

#[tokio::test]
async fn a_key_file_left_by_a_start_that_could_not_store_its_key_is_taken_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let left = ApiKey::new(KeyId::generate(), [7; 32]).expose();
    let path = dir.path().join(FILE_NAME);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&path)
        .expect("create");
    std::fs::write(&path, format!("{left}\n")).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let why = refused(first_start(dir.path())).await;
    assert!(why.contains("others than its owner"), "{why}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_eq!(bootstrapped(first_start(dir.path())).await, left);
    assert_eq!(file_key(dir.path()), left, "the file is kept as it was");
}
