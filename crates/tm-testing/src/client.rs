//! Driving a test application over HTTP: requests as admin, as a given key or as nobody,
//! typed helpers for the API's operations, and its `/metrics`, `/health/*` answers.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::{metric_value, TestApp};

/// A route creation body with the given key and URL.
pub fn route(tenant: &str, service: &str, env: &str, version: &str, url: &str) -> Value {
    json!({"tenant": tenant, "service": service, "env": env, "version": version, "url": url})
}

impl TestApp {
    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A request as admin.
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        if let Some(body) = body {
            req = req.json(&body);
        }
        Reply::from(req.send().await.expect("request sent")).await
    }

    /// A request with `key` (or no key at all).
    pub async fn request_as(
        &self,
        key: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.anonymous.request(method, self.url(path));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        Reply::from(req.send().await.expect("request sent")).await
    }

    /// A request with `key` and extra headers; status, headers and JSON body (null if
    /// none), for tests that take the answer apart.
    pub async fn send(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = self
            .anonymous
            .request(method, self.url(path))
            .bearer_auth(key);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let reply = Reply::from(req.send().await.expect("request sent")).await;
        let body = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        (reply.status, reply.headers, body)
    }

    /// `GET` as admin.
    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, None).await
    }

    /// Creates a key through the API as admin and returns its secret.
    pub async fn create_key(&self, role: &str, tenant: Option<&str>) -> String {
        let mut body = json!({"name": format!("{role} key"), "role": role});
        if let Some(tenant) = tenant {
            body["tenant"] = json!(tenant);
        }
        let reply = self.request(Method::POST, "/api/v1/keys", Some(body)).await;
        reply.assert_status(StatusCode::CREATED);
        reply.json()["key"].as_str().expect("key").to_owned()
    }

    /// `POST /api/v1/routes` with `body`, as admin.
    pub async fn create_route(&self, body: Value) -> Reply {
        self.request(Method::POST, "/api/v1/routes", Some(body))
            .await
    }

    /// Creates `(tenant, service, env, version) -> url` and asserts it was created.
    pub async fn create(
        &self,
        tenant: &str,
        service: &str,
        env: &str,
        version: &str,
        url: &str,
    ) -> Value {
        let reply = self
            .create_route(route(tenant, service, env, version, url))
            .await;
        reply.assert_status(StatusCode::CREATED);
        reply.json()
    }

    /// Creates active versions of acme/billing/prod with the given weights; each
    /// version's URL is `http://<version>`.
    pub async fn create_active_versions(&self, versions: &[(&str, u8)]) {
        for (version, weight) in versions {
            let mut body = route(
                "acme",
                "billing",
                "prod",
                version,
                &format!("http://{version}"),
            );
            body["active"] = json!(true);
            body["weight"] = json!(weight);
            self.create_route(body)
                .await
                .assert_status(StatusCode::CREATED);
        }
    }

    /// `POST /api/v1/routes/activate`, as admin.
    pub async fn activate(&self, tenant: &str, service: &str, env: &str, version: &str) -> Reply {
        let body = json!({"tenant": tenant, "service": service, "env": env, "version": version});
        self.request(Method::POST, "/api/v1/routes/activate", Some(body))
            .await
    }

    /// `POST /api/v1/routes/deactivate`, as admin.
    pub async fn deactivate(&self, tenant: &str, service: &str, env: &str, version: &str) -> Reply {
        let body = json!({"tenant": tenant, "service": service, "env": env, "version": version});
        self.request(Method::POST, "/api/v1/routes/deactivate", Some(body))
            .await
    }

    /// `GET /api/v1/routes/resolve` with the given query parameters.
    pub async fn resolve(&self, params: &[(&str, &str)]) -> Reply {
        let url = reqwest::Url::parse_with_params(&self.url("/api/v1/routes/resolve"), params)
            .expect("valid URL");
        Reply::from(self.client.get(url).send().await.expect("request sent")).await
    }

    /// Every route, following cursors.
    pub async fn all_routes(&self) -> Vec<Value> {
        let mut items = Vec::new();
        let mut path = "/api/v1/routes?limit=1000".to_owned();
        loop {
            let page = self.get(&path).await;
            page.assert_status(StatusCode::OK);
            let page = page.json();
            items.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(cursor) => path = format!("/api/v1/routes?limit=1000&cursor={cursor}"),
                None => return items,
            }
        }
    }

    /// Every event `key` (the admin key if none) may read, of `tenant` if given, in
    /// the event API's order, following `next_after` a page of `limit` at a time.
    pub async fn all_events(
        &self,
        key: Option<&str>,
        tenant: Option<&str>,
        limit: u32,
    ) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/events?limit={limit}");
            if let Some(tenant) = tenant {
                path.push_str(&format!("&tenant={tenant}"));
            }
            if let Some(after) = &after {
                path.push_str(&format!("&after={after}"));
            }
            let reply = match key {
                Some(key) => self.request_as(Some(key), Method::GET, &path, None).await,
                None => self.get(&path).await,
            };
            reply.assert_status(StatusCode::OK);
            let page = reply.json();
            let items = page["items"].as_array().expect("items").clone();
            if items.is_empty() {
                assert_eq!(page["next_after"].as_str(), after.as_deref());
                return events;
            }
            assert!(items.len() <= limit as usize);
            assert_eq!(page["next_after"], items.last().expect("an item")["id"]);
            after = page["next_after"].as_str().map(str::to_owned);
            events.extend(items);
        }
    }

    /// `/health/ready`: status code and body.
    pub async fn ready(&self) -> (StatusCode, Value) {
        let reply = self
            .request_as(None, Method::GET, "/health/ready", None)
            .await;
        (reply.status, reply.json())
    }

    /// The state of one circuit breaker (`closed`, `open`, `half_open`), as
    /// `/health/detailed` reports it; empty when it reports none by that name.
    pub async fn breaker_state(&self, breaker: &str) -> String {
        self.get("/health/detailed").await.json()["circuit_breakers"][breaker]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The `/metrics` scrape, whole.
    pub async fn scrape(&self) -> String {
        let reply = self.request_as(None, Method::GET, "/metrics", None).await;
        String::from_utf8(reply.body).expect("utf-8")
    }

    /// The value of one series in `/metrics` now; panics if there is no such series.
    pub async fn metric_value(&self, series: &str) -> f64 {
        metric_value(&self.scrape().await, series)
            .unwrap_or_else(|| panic!("{series} is not in /metrics"))
    }

    /// The value of one series in `/metrics` now, 0 while it is absent (a labelled
    /// counter appears on its first increment).
    pub async fn metric_or_zero(&self, series: &str) -> f64 {
        metric_value(&self.scrape().await, series).unwrap_or(0.0)
    }

    /// The value of one series once it has stopped moving (unchanged for 150 ms): a
    /// baseline that the background work set off by earlier writes (change
    /// notifications, catch-ups) no longer disturbs.
    pub async fn settled_metric_value(&self, series: &str) -> f64 {
        let mut last = self.metric_value(series).await;
        loop {
            // "Settled" is defined by time: no condition says the background work is
            // over, only that the value stayed put this long.
            tokio::time::sleep(Duration::from_millis(150)).await;
            let now = self.metric_value(series).await;
            if now == last {
                return now;
            }
            last = now;
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, as received.
    pub body: Vec<u8>,
}

impl Reply {
    /// Reads `response` whole.
    pub async fn from(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("body").to_vec();
        Self {
            status,
            headers,
            body,
        }
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn assert_status(&self, expected: StatusCode) -> &Self {
        assert_eq!(
            self.status,
            expected,
            "unexpected status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }

    /// The body as JSON; panics showing it if it is not.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// One header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 9457 problem document with this status, and returns it.
    #[track_caller]
    pub fn problem(&self, expected: StatusCode) -> Value {
        self.assert_status(expected);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "problem content type"
        );
        let body = self.json();
        assert_eq!(body["status"], expected.as_u16(), "problem status: {body}");
        assert!(
            body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(),
            "{body}"
        );
        body
    }
}
