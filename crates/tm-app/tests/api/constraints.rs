//! The database itself refuses rows the domain would refuse, whoever writes them.

use tm_testing::*;

fn insert(id: &str, tenant: &str, version: &str, url: &str, weight: i32) -> String {
    let (active, at) = if backend() == "postgres" {
        ("false", "now()")
    } else {
        ("0", "'2026-01-01T00:00:00Z'")
    };
    format!(
        "INSERT INTO routes (id, tenant, service, env, version, url, active, weight, revision, created_at, updated_at) \
         VALUES ('{id}', '{tenant}', 'billing', 'prod', '{version}', '{url}', {active}, {weight}, 1, {at}, {at})"
    )
}

#[tokio::test]
async fn the_schema_backs_the_domain_rules() {
    let app = spawn_app().await;
    let id = |n: u32| format!("00000000-0000-7000-8000-{n:012}");
    app.raw_execute(&insert(&id(1), "acme", "v1", "http://a", 100))
        .await
        .expect("a valid row is accepted");
    let long = "a".repeat(64);
    let long_url = format!("http://a/{}", "x".repeat(2048));
    let refused = [
        insert(&id(2), "acme", "v1", "http://b", 100), // duplicate natural key
        insert(&id(3), "Acme", "v1", "http://a", 100),
        insert(&id(4), "-acme", "v1", "http://a", 100),
        insert(&id(5), "ac me", "v1", "http://a", 100),
        insert(&id(6), "", "v1", "http://a", 100),
        insert(&id(7), &long, "v1", "http://a", 100),
        insert(&id(8), "acme", "V2", "http://a", 100),
        insert(&id(9), "acme", "v2/x", "http://a", 100),
        insert(&id(10), "acme", "v3", "ftp://a", 100),
        insert(&id(11), "acme", "v4", &long_url, 100),
        insert(&id(12), "acme", "v5", "http://a", 101),
        insert(&id(13), "acme", "v6", "http://a", -1),
    ];
    for sql in refused {
        assert!(app.raw_execute(&sql).await.is_err(), "accepted: {sql}");
    }
}
