//! Memory that hostile input cannot grow without bound.

use std::time::Duration;

use reqwest::StatusCode;

use tm_testing::*;

#[tokio::test]
async fn list_answers_under_many_cursors_stay_within_the_cache_byte_bound() {
    const BOUND: u64 = 1024 * 1024;
    let app = spawn_app_with(|raw| {
        raw.guards.read_cache_bytes = BOUND;
        raw.guards.read_cache_entries = 1_000_000;
        raw.guards.read_cache_ttl = Duration::from_secs(600);
    })
    .await;
    // 100 routes of about 2 KB each: a listing from the start is about 200 KB, and the
    // listings after each cursor hold about 10 MB together.
    let path = "p".repeat(1_900);
    for i in 0..100 {
        let url = format!("http://10.0.0.7:8080/{path}");
        app.create_route(route("acme", "billing", "prod", &format!("v{i}"), &url))
            .await
            .assert_status(StatusCode::CREATED);
    }
    let mut cursors = Vec::new();
    let mut page = "/api/v1/routes?limit=1".to_owned();
    loop {
        let reply = app.get(&page).await;
        reply.assert_status(StatusCode::OK);
        match reply.json()["next_cursor"].as_str() {
            Some(cursor) => {
                page = format!("/api/v1/routes?limit=1&cursor={cursor}");
                cursors.push(cursor.to_owned());
            }
            None => break,
        }
    }
    assert_eq!(cursors.len(), 99);
    // Everything after each cursor, as a client choosing cursors would ask.
    for cursor in &cursors {
        app.get(&format!("/api/v1/routes?limit=1000&cursor={cursor}"))
            .await
            .assert_status(StatusCode::OK);
    }
    let held = app.metric_value("read_cache_bytes{cache=\"list\"}").await;
    assert!(held > 0.0, "listings are cached");
    assert!(
        held <= (BOUND / 2) as f64,
        "the list cache holds {held} bytes, over its half of {BOUND}"
    );
}
