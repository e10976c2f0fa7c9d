//! The bad requests that try to create a route: bodies that are not JSON, JSON of the
//! wrong shape, bad identifiers and URLs, sizes and media types.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    let routes = "/api/v1/routes";
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
        // Broken after a field that is itself wrong: the syntax is what is reported.
        ("unknown field then truncated", br#"{"colour":1,"#.to_vec()),
        (
            "unknown field then trailing comma",
            br#"{"colour":1,}"#.to_vec(),
        ),
        (
            "wrong type then truncated",
            br#"{"weight":"heavy","#.to_vec(),
        ),
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
            "weight a whole float out of range",
            with(new_route(), "weight", json!(150.0)),
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

    cases
}
