//! Bad input, table-driven: every malformed, invalid, oversized, mistyped or misdirected
//! request answers a 4xx `application/problem+json` document, and none of them writes.
//!
//! Write cases aim at routes that exist (or would be new), so a request the server
//! wrongly accepted would show up as a change in the stored routes.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use tm_testing::*;

mod creation;
mod other_endpoints;

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
    let mut cases = creation::cases();
    cases.extend(other_endpoints::cases(existing));
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
