//! The bad requests aimed at existing routes and at the read endpoints: activate,
//! deactivate, patch, unknown ids, resolve and list queries, unknown paths and methods.

use super::*;

pub(super) fn cases(existing: &str) -> Vec<Case> {
    let routes = "/api/v1/routes";
    let activate = "/api/v1/routes/activate";
    let deactivate = "/api/v1/routes/deactivate";
    let one = format!("/api/v1/routes/{existing}");
    let resolve = "/api/v1/routes/resolve?";
    let mut cases = Vec::new();

    // Activate and deactivate: the same categories, aimed at real routes (v2 is
    // inactive, v1 active), so a wrongly accepted body would change one.
    for (path, name, version) in [
        (activate, "activate", "v2"),
        (deactivate, "deactivate", "v1"),
    ] {
        let key = key_of(version);
        for (what, body) in [
            ("empty body", b"".to_vec()),
            ("lone '{'", b"{".to_vec()),
            ("truncated", br#"{"tenant":"acme","service":"#.to_vec()),
            ("trailing comma", br#"{"tenant":"acme",}"#.to_vec()),
            ("unknown field then truncated", br#"{"colour":1,"#.to_vec()),
            (
                "unknown field then trailing comma",
                br#"{"colour":1,}"#.to_vec(),
            ),
            (
                "valid body then garbage",
                [to_bytes(&key).as_slice(), b"garbage"].concat(),
            ),
        ] {
            cases.push(raw(
                format!("{name}: {what}"),
                Method::POST,
                path,
                body,
                400,
            ));
        }
        for (what, body, field) in [
            ("empty object", json!({}), "version"),
            ("array", json!([]), "body"),
            ("null", json!(null), "body"),
            ("string", json!("acme"), "body"),
            ("missing tenant", without(key.clone(), "tenant"), "tenant"),
            (
                "missing version",
                without(key.clone(), "version"),
                "version",
            ),
            (
                "tenant a number",
                with(key.clone(), "tenant", json!(1)),
                "tenant",
            ),
            (
                "version an array",
                with(key.clone(), "version", json!([version])),
                "version",
            ),
            (
                "unknown field active",
                with(key.clone(), "active", json!(true)),
                "active",
            ),
            (
                "unknown field url",
                with(key.clone(), "url", json!("http://x.internal")),
                "url",
            ),
            (
                "tenant uppercase",
                with(key.clone(), "tenant", json!("ACME")),
                "tenant",
            ),
            (
                "service with a slash",
                with(key.clone(), "service", json!("bill/ing")),
                "service",
            ),
            ("env empty", with(key.clone(), "env", json!("")), "env"),
            (
                "version uppercase",
                with(key.clone(), "version", json!(version.to_uppercase())),
                "version",
            ),
            (
                "version with a space",
                with(key.clone(), "version", json!(format!("{version} "))),
                "version",
            ),
        ] {
            cases.push(
                json_case(format!("{name}: {what}"), Method::POST, path, &body, 422).naming(field),
            );
        }
        cases.push(
            json_case(
                format!("{name}: the key as a positional array"),
                Method::POST,
                path,
                &json!(["acme", "billing", "prod", version]),
                422,
            )
            .naming("body"),
        );
        cases.push(json_case(
            format!("{name}: no such route"),
            Method::POST,
            path,
            &key_of("v404"),
            404,
        ));
        cases.push(raw(
            format!("{name}: oversized"),
            Method::POST,
            path,
            oversized_route(70_000),
            413,
        ));
        cases.push(Case::new(
            format!("{name}: text/plain"),
            Method::POST,
            path,
            Some("text/plain"),
            to_bytes(&key),
            415,
        ));
        cases.push(Case::new(
            format!("{name}: no content type"),
            Method::POST,
            path,
            None,
            to_bytes(&key),
            415,
        ));
    }

    // Patch of an existing route.
    for (what, body) in [
        ("empty body", b"".to_vec()),
        ("broken JSON", br#"{"url":"#.to_vec()),
        ("trailing garbage", br#"{"weight":5} x"#.to_vec()),
        ("single quotes", br#"{'weight':5}"#.to_vec()),
        ("unknown field then truncated", br#"{"colour":1,"#.to_vec()),
        (
            "unknown field then trailing comma",
            br#"{"url":"http://a","colour":1,}"#.to_vec(),
        ),
        (
            "wrong type then truncated",
            br#"{"weight":"heavy","#.to_vec(),
        ),
    ] {
        cases.push(raw(
            format!("patch: {what}"),
            Method::PATCH,
            &one,
            body,
            400,
        ));
    }
    for (what, body, field) in [
        ("empty object", json!({}), "body"),
        ("both null", json!({"url": null, "weight": null}), "url"),
        ("weight null", json!({"weight": null}), "weight"),
        ("array", json!([]), "body"),
        ("null", json!(null), "body"),
        (
            "url and weight as a positional array",
            json!(["http://patched.internal", 5]),
            "body",
        ),
        ("bad url", json!({"url": "ftp://patched.internal"}), "url"),
        (
            "url with user-info",
            json!({"url": "http://u:p@patched.internal"}),
            "url",
        ),
        (
            "url with a fragment",
            json!({"url": "http://patched.internal/#x"}),
            "url",
        ),
        ("relative url", json!({"url": "/patched"}), "url"),
        ("url a number", json!({"url": 5}), "url"),
        ("weight 101", json!({"weight": 101}), "weight"),
        ("weight negative", json!({"weight": -5}), "weight"),
        ("weight a string", json!({"weight": "5"}), "weight"),
        ("weight a float", json!({"weight": 5.5}), "weight"),
        (
            "valid weight with a bad url",
            json!({"weight": 5, "url": "javascript:alert(1)"}),
            "url",
        ),
        ("unknown field active", json!({"active": true}), "active"),
        (
            "unknown field tenant",
            json!({"weight": 5, "tenant": "globex"}),
            "tenant",
        ),
        (
            "read-only field revision",
            json!({"weight": 5, "revision": 9}),
            "revision",
        ),
    ] {
        cases.push(
            json_case(format!("patch: {what}"), Method::PATCH, &one, &body, 422).naming(field),
        );
    }
    cases.push(raw(
        "patch: oversized",
        Method::PATCH,
        &one,
        oversized_route(70_000),
        413,
    ));
    let small_patch = to_bytes(&json!({"weight": 5}));
    for (what, content_type) in [
        ("text/plain", Some("text/plain")),
        ("form-urlencoded", Some("application/x-www-form-urlencoded")),
        ("no content type", None),
    ] {
        cases.push(Case::new(
            format!("patch: content type {what}"),
            Method::PATCH,
            &one,
            content_type,
            small_patch.clone(),
            415,
        ));
    }
    for (what, tag) in [
        ("stale If-Match", "\"999\""),
        ("weak If-Match", "W/\"1\""),
        ("unquoted If-Match", "1"),
        ("unreadable If-Match", "\"abc\""),
    ] {
        cases.push(
            raw(
                format!("patch: {what}"),
                Method::PATCH,
                &one,
                small_patch.clone(),
                412,
            )
            .header("if-match", tag),
        );
    }
    cases.push(
        bare("delete: stale If-Match", Method::DELETE, &one, 412).header("if-match", "\"999\""),
    );

    // Key creation: broken bodies are 400 whatever fields they name.
    for (what, body) in [
        ("empty body", b"".to_vec()),
        ("truncated", br#"{"name":"ci","role":"#.to_vec()),
        (
            "trailing comma",
            br#"{"name":"ci","role":"reader",}"#.to_vec(),
        ),
        ("unknown field then truncated", br#"{"colour":1,"#.to_vec()),
        ("not JSON at all", b"name=ci&role=reader".to_vec()),
    ] {
        cases.push(raw(
            format!("create key: {what}"),
            Method::POST,
            "/api/v1/keys",
            body,
            400,
        ));
    }

    // Ids that name no route.
    for (what, id) in [
        ("not a uuid", "not-a-uuid".to_owned()),
        ("uuid without hyphens", existing.replace('-', "")),
        ("uuid in braces", format!("{{{existing}}}")),
        ("uuid with a suffix", format!("{existing}0")),
        (
            "unknown uuid",
            "00000000-0000-0000-0000-000000000000".to_owned(),
        ),
    ] {
        let path = format!("/api/v1/routes/{id}");
        cases.push(bare(format!("get: {what}"), Method::GET, path.clone(), 404));
        cases.push(json_case(
            format!("patch: {what}"),
            Method::PATCH,
            &path,
            &json!({"weight": 5}),
            404,
        ));
        cases.push(bare(format!("delete: {what}"), Method::DELETE, path, 404));
    }

    // Resolve: unreadable query strings are 400, invalid values 422.
    for (what, query) in [
        ("no query", ""),
        ("missing env", "tenant=acme&service=billing"),
        ("missing service", "tenant=acme&env=prod"),
        ("missing tenant", "service=billing&env=prod"),
        (
            "unknown parameter",
            "tenant=acme&service=billing&env=prod&colour=blue",
        ),
        (
            "parameter in the wrong case",
            "tenant=acme&service=billing&env=prod&Version=v1",
        ),
        (
            "parameter with an empty name",
            "tenant=acme&service=billing&env=prod&=x",
        ),
        (
            "duplicated tenant",
            "tenant=acme&tenant=acme&service=billing&env=prod",
        ),
        (
            "duplicated version",
            "tenant=acme&service=billing&env=prod&version=v1&version=v2",
        ),
    ] {
        cases.push(bare(
            format!("resolve: {what}"),
            Method::GET,
            format!("{resolve}{query}"),
            400,
        ));
    }
    let long_key = "k".repeat(257);
    for (what, query, field) in [
        (
            "tenant uppercase",
            "tenant=ACME&service=billing&env=prod".to_owned(),
            "tenant",
        ),
        (
            "tenant empty",
            "tenant=&service=billing&env=prod".to_owned(),
            "tenant",
        ),
        (
            "tenant with an encoded slash",
            "tenant=ac%2Fme&service=billing&env=prod".to_owned(),
            "tenant",
        ),
        (
            "tenant emoji",
            "tenant=%F0%9F%9A%80&service=billing&env=prod".to_owned(),
            "tenant",
        ),
        (
            "service with a space",
            "tenant=acme&service=bill+ing&env=prod".to_owned(),
            "service",
        ),
        (
            "service too long",
            format!("tenant=acme&service={}&env=prod", "s".repeat(64)),
            "service",
        ),
        (
            "env leading dot",
            "tenant=acme&service=billing&env=.prod".to_owned(),
            "env",
        ),
        (
            "env with a stray percent",
            "tenant=acme&service=billing&env=pr%ZZod".to_owned(),
            "env",
        ),
        (
            "version uppercase",
            "tenant=acme&service=billing&env=prod&version=V1".to_owned(),
            "version",
        ),
        (
            "version empty",
            "tenant=acme&service=billing&env=prod&version=".to_owned(),
            "version",
        ),
        (
            "empty key",
            "tenant=acme&service=billing&env=prod&key=".to_owned(),
            "key",
        ),
        (
            "key too long",
            format!("tenant=acme&service=billing&env=prod&key={long_key}"),
            "key",
        ),
    ] {
        cases.push(
            bare(
                format!("resolve: {what}"),
                Method::GET,
                format!("{resolve}{query}"),
                422,
            )
            .naming(field),
        );
    }
    for (what, query) in [
        ("nothing active", "tenant=globex&service=search&env=staging"),
        (
            "inactive version",
            "tenant=globex&service=search&env=staging&version=v1",
        ),
        ("unknown service", "tenant=acme&service=nothing&env=prod"),
    ] {
        cases.push(bare(
            format!("resolve: {what}"),
            Method::GET,
            format!("{resolve}{query}"),
            404,
        ));
    }

    // List: the same split.
    for (what, query) in [
        ("limit not a number", "limit=abc"),
        ("limit negative", "limit=-1"),
        ("limit a float", "limit=1.5"),
        ("limit empty", "limit="),
        ("limit past u32", "limit=4294967296"),
        ("active maybe", "active=maybe"),
        ("active 1", "active=1"),
        ("active uppercase", "active=TRUE"),
        ("cursor garbage", "cursor=garbage"),
        ("cursor empty", "cursor="),
        ("cursor not base64", "cursor=!!"),
        ("cursor of a foreign shape", "cursor=cjE6bm9wZQ"),
        ("unknown parameter", "colour=blue"),
        ("duplicated limit", "limit=10&limit=20"),
        ("duplicated tenant", "tenant=acme&tenant=globex"),
    ] {
        cases.push(bare(
            format!("list: {what}"),
            Method::GET,
            format!("{routes}?{query}"),
            400,
        ));
    }
    for (what, query, field) in [
        ("limit 0", "limit=0", "limit"),
        ("limit 1001", "limit=1001", "limit"),
        ("limit 100000", "limit=100000", "limit"),
        ("tenant uppercase", "tenant=BAD", "tenant"),
        ("tenant empty", "tenant=", "tenant"),
        ("service with a space", "service=a+b", "service"),
        ("env leading dash", "env=-prod", "env"),
    ] {
        cases.push(
            bare(
                format!("list: {what}"),
                Method::GET,
                format!("{routes}?{query}"),
                422,
            )
            .naming(field),
        );
    }

    // Paths that do not exist.
    for path in [
        "/api/v1/nope",
        "/api/v2/routes",
        "/api",
        "/api/v1",
        "/api/v1/routes/",
        "/routes",
        "/api/v1/route",
        "/API/V1/ROUTES",
    ] {
        cases.push(bare(format!("unknown path {path}"), Method::GET, path, 404));
    }
    cases.push(bare(
        "a path below a route",
        Method::GET,
        format!("{one}/extra"),
        404,
    ));
    cases.push(json_case(
        "activate below a route",
        Method::POST,
        &format!("{one}/activate"),
        &json!({}),
        404,
    ));

    // Methods a resource does not support.
    for (method, path) in [
        (Method::PUT, routes.to_owned()),
        (Method::DELETE, routes.to_owned()),
        (Method::PATCH, routes.to_owned()),
        (Method::PUT, one.clone()),
        (Method::POST, one.clone()),
        (Method::GET, activate.to_owned()),
        (Method::DELETE, deactivate.to_owned()),
        (
            Method::POST,
            "/api/v1/routes/resolve?tenant=acme&service=billing&env=prod".to_owned(),
        ),
        (Method::DELETE, "/api/v1/routes/resolve".to_owned()),
        (Method::POST, "/healthz".to_owned()),
    ] {
        cases.push(Case::new(
            format!("{method} {path}"),
            method,
            path,
            JSON,
            to_bytes(&new_route()),
            405,
        ));
    }

    cases
}
