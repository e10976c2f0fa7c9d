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

/// PostgreSQL's schema states the domain's URL rule for new rows (migration 0006);
/// SQLite's cannot be changed on an existing table (see the migration), so there the
/// snapshot load is what leaves such rows out.
#[tokio::test]
async fn postgres_refuses_urls_the_domain_refuses() {
    if backend() != "postgres" {
        return;
    }
    let app = spawn_app().await;
    let id = |n: u32| format!("00000000-0000-7000-8000-{n:012}");
    let accepted = [
        "http://10.0.0.7:8080",
        "https://payments.example.com/v2",
        "http://[::1]:9000/path?q=1",
        "HTTPS://Example.COM/A",
        "http://svc.internal/a/b/c?x=y&z=%20",
        "http://a?x=1",
        "http://a/b@c;d=e,f+g!h$i*j(k)l'm~n",
    ];
    for (n, url) in (1..).zip(accepted) {
        tm_domain::UpstreamUrl::parse(url).expect("the domain accepts it");
        app.raw_execute(&insert(
            &id(n),
            "acme",
            &format!("v{n}"),
            &url.replace('\'', "''"),
            100,
        ))
        .await
        .unwrap_or_else(|e| panic!("{url} refused: {e}"));
    }
    let refused = [
        "http://user@example.com",
        "http://user:pw@example.com/",
        "http://:pw@example.com",
        "http://example.com/#frag",
        "http://exa mple.com",
        "http://example.com/p\u{e4}th",
        "http://a/%4",
        "http://a/%L6",
        "http://a/b|c",
        "http://",
        "http:///path",
        "http://:80/",
    ];
    for (n, url) in (100..).zip(refused) {
        assert!(tm_domain::UpstreamUrl::parse(url).is_err(), "{url}");
        let sql = insert(&id(n), "acme", &format!("v{n}"), url, 100);
        assert!(app.raw_execute(&sql).await.is_err(), "accepted: {url}");
    }
}
