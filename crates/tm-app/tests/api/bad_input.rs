//! Bad input, table-driven: every malformed, invalid, oversized, mistyped or misdirected
//! request answers a 4xx `application/problem+json` document, and none of them writes.
//!
//! Write cases aim at routes that exist (or would be new), so a request the server
//! wrongly accepted would show up as a change in the stored routes.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use tm_testing::*;

const JSON: Option<&str> = Some("application/json");

/// One bad request and the status it must get.
struct Case {
    what: String,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    /// For 422: a field the `errors` list must name.
    field: Option<&'static str>,
}

impl Case {
    fn new(
        what: impl Into<String>,
        method: Method,
        path: impl Into<String>,
        content_type: Option<&'static str>,
        body: impl Into<Vec<u8>>,
        status: u16,
    ) -> Self {
        Self {
            what: what.into(),
            method,
            path: path.into(),
            content_type,
            headers: Vec::new(),
            body: body.into(),
            status,
            field: None,
        }
    }

    /// The `errors` of the 422 must name `field`.
    fn naming(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The path, shortened when it carries a huge query.
    fn path_for_humans(&self) -> String {
        if self.path.chars().count() > 120 {
            format!("{}…", self.path.chars().take(120).collect::<String>())
        } else {
            self.path.clone()
        }
    }
}

/// A JSON-typed request with a raw body.
fn raw(
    what: impl Into<String>,
    method: Method,
    path: &str,
    body: impl Into<Vec<u8>>,
    status: u16,
) -> Case {
    Case::new(what, method, path, JSON, body, status)
}

/// A JSON-typed request with a JSON body.
fn json_case(
    what: impl Into<String>,
    method: Method,
    path: &str,
    body: &Value,
    status: u16,
) -> Case {
    raw(what, method, path, to_bytes(body), status)
}

/// A request without a body.
fn bare(what: impl Into<String>, method: Method, path: impl Into<String>, status: u16) -> Case {
    Case::new(what, method, path, None, Vec::new(), status)
}

fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a JSON value serializes")
}

/// A valid creation body for a route that does not exist yet.
fn new_route() -> Value {
    route(
        "acme",
        "billing",
        "prod",
        "v9",
        "http://billing-v9.internal:8080",
    )
}

/// `base` with `field` set to `value`.
fn with(mut base: Value, field: &str, value: Value) -> Value {
    base[field] = value;
    base
}

/// `base` without `field`.
fn without(mut base: Value, field: &str) -> Value {
    base.as_object_mut().expect("an object").remove(field);
    base
}

/// A valid activate/deactivate body naming an existing route of acme/billing/prod.
fn key_of(version: &str) -> Value {
    json!({"tenant": "acme", "service": "billing", "env": "prod", "version": version})
}

/// A body of `size` bytes that is valid JSON of the create shape but for its size.
fn oversized_route(size: usize) -> Vec<u8> {
    let head = br#"{"tenant":"acme","service":"billing","env":"prod","version":"v9","url":"http://big.internal/"#;
    let mut body = head.to_vec();
    body.resize(size - 2, b'a');
    body.extend_from_slice(b"\"}");
    assert_eq!(body.len(), size);
    body
}

/// Identifiers the contract refuses, with a description of each.
fn bad_identifiers() -> Vec<(&'static str, String)> {
    vec![
        ("uppercase", "ACME".into()),
        ("mixed case", "Acme".into()),
        ("leading '-'", "-acme".into()),
        ("leading '.'", ".acme".into()),
        ("leading '_'", "_acme".into()),
        ("inner space", "ac me".into()),
        ("leading space", " acme".into()),
        ("trailing space", "acme ".into()),
        ("slash", "ac/me".into()),
        ("unicode", "acm\u{e9}".into()),
        ("empty", String::new()),
        ("64 characters", "a".repeat(64)),
        ("percent sign", "a%20b".into()),
        ("emoji", "\u{1f680}".into()),
        ("newline", "ac\nme".into()),
        ("colon", "ac:me".into()),
        ("plus", "a+b".into()),
        ("NUL", "a\u{0}b".into()),
    ]
}

/// URLs the contract refuses, with a description of each.
fn bad_urls() -> Vec<(&'static str, String)> {
    vec![
        ("relative path", "/relative/path".into()),
        ("no scheme", "billing.internal:8080".into()),
        ("ftp", "ftp://billing.internal/".into()),
        ("file", "file:///etc/passwd".into()),
        ("javascript", "javascript:alert(1)".into()),
        ("mailto", "mailto:ops@billing.internal".into()),
        ("no host", "http://".into()),
        ("empty host", "http:///path".into()),
        ("user and password", "http://u:p@billing.internal/".into()),
        ("user only", "http://user@billing.internal/".into()),
        ("fragment", "http://billing.internal/#x".into()),
        ("empty fragment", "http://billing.internal/#".into()),
        ("leading whitespace", " http://billing.internal/".into()),
        ("inner whitespace", "http://billing .internal/".into()),
        ("tab", "http://billing.internal/\t".into()),
        (
            "over 2048 characters",
            format!("http://billing.internal/{}", "a".repeat(2048)),
        ),
        ("no slashes", "http:billing.internal".into()),
        ("empty", String::new()),
        ("unclosed IPv6 host", "https://[::1".into()),
    ]
}

/// Every bad request, given the id of an existing route.
fn corpus(existing: &str) -> Vec<Case> {
    let routes = "/api/v1/routes";
    let activate = "/api/v1/routes/activate";
    let deactivate = "/api/v1/routes/deactivate";
    let one = format!("/api/v1/routes/{existing}");
    let resolve = "/api/v1/routes/resolve?";
    let valid = to_bytes(&new_route());
    let mut cases = Vec::new();

    // Creation: bodies that are not JSON at all.
    for (what, body) in [
        ("empty body", b"".to_vec()),
        ("lone '{'", b"{".to_vec()),
        ("lone '}'", b"}".to_vec()),
        ("whitespace only", b"  \n ".to_vec()),
        ("truncated object", br#"{"tenant":"acme""#.to_vec()),
        (
            "truncated after a colon",
            br#"{"tenant":"acme","service":"#.to_vec(),
        ),
        ("truncated string", br#"{"tenant":"ac"#.to_vec()),
        (
            "trailing comma",
            br#"{"tenant":"acme","service":"billing",}"#.to_vec(),
        ),
        ("single quotes", br#"{'tenant':'acme'}"#.to_vec()),
        ("unquoted key", br#"{tenant:"acme"}"#.to_vec()),
        ("NaN", br#"{"weight":NaN}"#.to_vec()),
        ("Infinity", br#"{"weight":Infinity}"#.to_vec()),
        ("leading zero", br#"{"weight":01}"#.to_vec()),
        ("comment", br#"{/* note */"tenant":"acme"}"#.to_vec()),
        ("invalid escape", br#"{"tenant":"a\q"}"#.to_vec()),
        (
            "raw control character in a string",
            b"{\"tenant\":\"a\x01b\"}".to_vec(),
        ),
        ("invalid UTF-8", b"{\"tenant\":\"\xff\xfe\"}".to_vec()),
        (
            "byte order mark",
            [b"\xef\xbb\xbf".as_slice(), &valid].concat(),
        ),
        ("two objects", b"{}{}".to_vec()),
        (
            "valid body then garbage",
            [valid.as_slice(), b" x"].concat(),
        ),
        ("valid body then '}'", [valid.as_slice(), b"}"].concat()),
        (
            "form encoding sent as JSON",
            b"tenant=acme&service=billing".to_vec(),
        ),
        ("bare word", b"undefined".to_vec()),
    ] {
        cases.push(raw(
            format!("create: {what}"),
            Method::POST,
            routes,
            body,
            400,
        ));
    }

    // Creation: JSON, but not an object of the right shape.
    for (what, body, field) in [
        ("empty array", json!([]), "body"),
        ("array of numbers", json!([1, 2]), "body"),
        ("string", json!("x"), "body"),
        ("null", json!(null), "body"),
        ("number", json!(42), "body"),
        ("boolean", json!(true), "body"),
        (
            "tenant a number",
            with(new_route(), "tenant", json!(7)),
            "tenant",
        ),
        (
            "tenant an array",
            with(new_route(), "tenant", json!(["acme"])),
            "tenant",
        ),
        (
            "tenant an object",
            with(new_route(), "tenant", json!({"name": "acme"})),
            "tenant",
        ),
        (
            "tenant null",
            with(new_route(), "tenant", json!(null)),
            "tenant",
        ),
        (
            "service a boolean",
            with(new_route(), "service", json!(false)),
            "service",
        ),
        ("env a number", with(new_route(), "env", json!(1)), "env"),
        (
            "version a number",
            with(new_route(), "version", json!(2)),
            "version",
        ),
        ("url a number", with(new_route(), "url", json!(8080)), "url"),
        (
            "url an object",
            with(new_route(), "url", json!({"host": "x"})),
            "url",
        ),
        ("url null", with(new_route(), "url", json!(null)), "url"),
        (
            "weight a string",
            with(new_route(), "weight", json!("50")),
            "weight",
        ),
        (
            "weight a float",
            with(new_route(), "weight", json!(50.5)),
            "weight",
        ),
        (
            "weight a whole float",
            with(new_route(), "weight", json!(50.0)),
            "weight",
        ),
        (
            "weight a boolean",
            with(new_route(), "weight", json!(true)),
            "weight",
        ),
        (
            "weight negative",
            with(new_route(), "weight", json!(-1)),
            "weight",
        ),
        (
            "weight 101",
            with(new_route(), "weight", json!(101)),
            "weight",
        ),
        (
            "weight 256",
            with(new_route(), "weight", json!(256)),
            "weight",
        ),
        (
            "weight past i64",
            with(new_route(), "weight", json!(9_223_372_036_854_775_808_u64)),
            "weight",
        ),
        (
            "weight an array",
            with(new_route(), "weight", json!([50])),
            "weight",
        ),
        (
            "active a string",
            with(new_route(), "active", json!("true")),
            "active",
        ),
        (
            "active a number",
            with(new_route(), "active", json!(1)),
            "active",
        ),
        ("missing tenant", without(new_route(), "tenant"), "tenant"),
        (
            "missing service",
            without(new_route(), "service"),
            "service",
        ),
        ("missing env", without(new_route(), "env"), "env"),
        (
            "missing version",
            without(new_route(), "version"),
            "version",
        ),
        ("missing url", without(new_route(), "url"), "url"),
        ("empty object", json!({}), "url"),
        (
            "unknown field",
            with(new_route(), "colour", json!("blue")),
            "colour",
        ),
        (
            "read-only field id",
            with(
                new_route(),
                "id",
                json!("0190c5d2-7b1e-7000-8000-000000000000"),
            ),
            "id",
        ),
        (
            "read-only field revision",
            with(new_route(), "revision", json!(7)),
            "revision",
        ),
        (
            "misspelt field",
            with(without(new_route(), "tenant"), "tennant", json!("acme")),
            "tennant",
        ),
    ] {
        cases.push(
            json_case(format!("create: {what}"), Method::POST, routes, &body, 422).naming(field),
        );
    }
    // Bodies serde_json would read but that are invalid in content.
    cases.push(
        raw(
            "create: weight beyond u64",
            Method::POST,
            routes,
            br#"{"tenant":"acme","service":"billing","env":"prod","version":"v9","url":"http://x.internal","weight":99999999999999999999}"#.to_vec(),
            422,
        )
        .naming("weight"),
    );
    cases.push(raw(
        "create: duplicate key",
        Method::POST,
        routes,
        br#"{"tenant":"acme","tenant":"globex","service":"billing","env":"prod","version":"v9","url":"http://x.internal"}"#.to_vec(),
        422,
    ));
    // A positional array is not the object the contract asks for, even with good values.
    cases.push(
        json_case(
            "create: a complete route as a positional array",
            Method::POST,
            routes,
            &json!([
                "acme",
                "billing",
                "prod",
                "v9",
                "http://billing-v9.internal:8080",
                false,
                100
            ]),
            422,
        )
        .naming("body"),
    );

    // Creation: bad identifiers in each of the four key fields.
    for field in ["tenant", "service", "env", "version"] {
        for (what, value) in bad_identifiers() {
            cases.push(
                json_case(
                    format!("create: {field} {what}"),
                    Method::POST,
                    routes,
                    &with(new_route(), field, json!(value)),
                    422,
                )
                .naming(field),
            );
        }
    }

    // Creation: bad URLs.
    for (what, url) in bad_urls() {
        cases.push(
            json_case(
                format!("create: url {what}"),
                Method::POST,
                routes,
                &with(new_route(), "url", json!(url)),
                422,
            )
            .naming("url"),
        );
    }
    cases.push(
        json_case(
            "create: url and weight both bad",
            Method::POST,
            routes,
            &with(
                with(new_route(), "url", json!("ftp://x")),
                "weight",
                json!(101),
            ),
            422,
        )
        .naming("weight"),
    );
    cases.push(json_case(
        "create: an existing route",
        Method::POST,
        routes,
        &route("acme", "billing", "prod", "v1", "http://elsewhere.internal"),
        409,
    ));

    // Creation: size and media type.
    cases.push(raw(
        "create: 70,000-byte body",
        Method::POST,
        routes,
        oversized_route(70_000),
        413,
    ));
    cases.push(raw(
        "create: 64 KiB + 1 body",
        Method::POST,
        routes,
        oversized_route(64 * 1024 + 1),
        413,
    ));
    cases.push(raw(
        "create: 1 MiB of whitespace",
        Method::POST,
        routes,
        [b"{".as_slice(), &vec![b' '; 1 << 20], b"}"].concat(),
        413,
    ));
    for (what, content_type) in [
        ("text/plain", Some("text/plain")),
        ("form-urlencoded", Some("application/x-www-form-urlencoded")),
        ("multipart", Some("multipart/form-data; boundary=x")),
        ("text/json", Some("text/json")),
        ("application/xml", Some("application/xml")),
        ("application/jsonx", Some("application/jsonx")),
        ("bare 'json'", Some("json")),
        ("empty content type", Some("")),
        ("no content type", None),
    ] {
        cases.push(Case::new(
            format!("create: content type {what}"),
            Method::POST,
            routes,
            content_type,
            valid.clone(),
            415,
        ));
    }
    cases.push(Case::new(
        "create: oversized text/plain (media type first)",
        Method::POST,
        routes,
        Some("text/plain"),
        oversized_route(70_000),
        415,
    ));

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

/// Everything wrong with how the server answered `case`, if anything.
fn check(index: usize, case: &Case, reply: &Reply) -> Vec<String> {
    let mut wrong = Vec::new();
    let name = format!(
        "case {index} ({} {} — {})",
        case.method,
        case.path_for_humans(),
        case.what
    );
    let body_text: String = String::from_utf8_lossy(&reply.body)
        .chars()
        .take(400)
        .collect();
    let content_type = reply.header("content-type");
    if reply.status.as_u16() != case.status || !reply.status.is_client_error() {
        wrong.push(format!(
            "{name}: status {} instead of {} (a 4xx problem); content-type {content_type:?}; body: {body_text}",
            reply.status, case.status
        ));
    }
    if content_type != Some("application/problem+json") {
        // Not a problem document at all: its members are not worth checking one by one.
        if reply.status.as_u16() == case.status {
            wrong.push(format!(
                "{name}: content-type {content_type:?} instead of application/problem+json"
            ));
        }
        return wrong;
    }
    let Ok(problem) = serde_json::from_slice::<Value>(&reply.body) else {
        wrong.push(format!("{name}: body is not JSON: {body_text}"));
        return wrong;
    };
    for member in ["type", "title", "detail"] {
        if problem[member].as_str().is_none_or(str::is_empty) {
            wrong.push(format!(
                "{name}: problem has no string {member:?}: {problem}"
            ));
        }
    }
    if problem["status"].as_u64() != Some(u64::from(reply.status.as_u16())) {
        wrong.push(format!(
            "{name}: problem status {} differs from HTTP {}",
            problem["status"], reply.status
        ));
    }
    if reply.status == StatusCode::UNPROCESSABLE_ENTITY {
        match problem["errors"].as_array() {
            Some(errors) if !errors.is_empty() => {
                for error in errors {
                    if !(error["field"].is_string() && error["message"].is_string()) {
                        wrong.push(format!("{name}: malformed field error {error}"));
                    }
                }
                if let Some(field) = case.field {
                    if !errors.iter().any(|e| e["field"] == field) {
                        wrong.push(format!("{name}: errors do not name {field:?}: {problem}"));
                    }
                }
            }
            _ => wrong.push(format!("{name}: a 422 without field errors: {problem}")),
        }
    }
    wrong
}

#[tokio::test]
async fn every_bad_request_is_a_4xx_problem_and_changes_nothing() {
    let app = spawn_app().await;
    let v1 = app
        .create(
            "acme",
            "billing",
            "prod",
            "v1",
            "http://billing-v1.internal:8080",
        )
        .await;
    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    app.create(
        "acme",
        "billing",
        "prod",
        "v2",
        "http://billing-v2.internal:8080",
    )
    .await;
    app.create(
        "globex",
        "search",
        "staging",
        "v1",
        "https://search.globex.internal/v1",
    )
    .await;
    let before = app.all_routes().await;
    assert_eq!(before.len(), 3, "seeded routes");

    let existing = v1["id"].as_str().expect("route id");
    let cases = corpus(existing);
    assert!(
        cases.len() >= 100,
        "the corpus has only {} cases",
        cases.len()
    );
    for (index, case) in cases.iter().enumerate() {
        assert!(
            (400..500).contains(&case.status),
            "case {index} ({}) expects {}, not a 4xx",
            case.what,
            case.status
        );
    }

    let mut wrong = Vec::new();
    let mut current = before.clone();
    for (index, case) in cases.iter().enumerate() {
        let mut request = app.client.request(case.method.clone(), app.url(&case.path));
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        for (name, value) in &case.headers {
            request = request.header(*name, value.as_str());
        }
        if !case.body.is_empty() || case.content_type.is_some() {
            request = request.body(case.body.clone());
        }
        match request.send().await {
            Ok(response) => {
                let reply = Reply::from(response).await;
                wrong.extend(check(index, case, &reply));
            }
            Err(err) => wrong.push(format!(
                "case {index} ({}): request failed: {err}",
                case.what
            )),
        }
        // Checked after every case, so a write is pinned on the request that made it.
        let now = app.all_routes().await;
        if now != current {
            wrong.push(format!(
                "case {index} ({}): the stored routes changed",
                case.what
            ));
            current = now;
        }
    }

    assert!(
        wrong.is_empty(),
        "{} of {} bad requests were answered wrongly:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    assert_eq!(
        app.all_routes().await,
        before,
        "bad requests changed the stored routes"
    );
}
