//! The typed API over HTTP, with retries.

use std::time::Duration;

use reqwest::header::{
    HeaderValue, AUTHORIZATION, CACHE_CONTROL, ETAG, IF_MATCH, IF_NONE_MATCH, RETRY_AFTER,
};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::json;
use url::Url;

use crate::api::{
    ApiKey, AuditPage, CreatedKey, DeadJob, NewRoute, Page, Resolved, RolledBack, Route, RouteKey,
    RouteQuery, ServiceKey, WatchState,
};
use crate::error::{Error, Problem};
use crate::resolver::{Resolver, ResolverOptions};

/// How a [`Client`] is made: the server, the key, time-outs and retries.
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    base: String,
    key: String,
    timeout: Duration,
    connect_timeout: Duration,
    attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
}

impl ClientBuilder {
    /// Each request's time-out, from sending to the whole answer (default 10 s). A
    /// watch's own wait is added to it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest wait for a connection to open (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Attempts per call, the first included (default 3; 1: no retry). A retry follows
    /// an unreachable server, or a 429 or 503 (after its `Retry-After` when it gives
    /// one); writes are retried only when they cannot have been applied twice (see
    /// [`Client`]).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// The first retry's delay (default 100 ms), doubled at each further retry up to
    /// `max` (default 2 s), each drawn at random between half and all of it.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let mut base =
            Url::parse(&self.base).map_err(|e| Error::Url(format!("{}: {e}", self.base)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Url(format!("{}: not http or https", self.base)));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", self.key))
            .map_err(|_| Error::Url("the key is not a valid header value".into()))?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .build()
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        Ok(Client {
            base,
            auth,
            http,
            timeout: self.timeout,
            attempts: self.attempts,
            backoff: self.backoff,
            max_backoff: self.max_backoff,
        })
    }
}

/// A client of one server, with one key. Cheap to clone (clones share connections).
///
/// Reads, activate and deactivate (which change nothing when repeated) and deletes are
/// retried; a create is retried only on an answer that says it was not applied (429,
/// 503), never after losing the connection mid-request.
#[derive(Clone, Debug)]
pub struct Client {
    base: Url,
    auth: HeaderValue,
    http: reqwest::Client,
    timeout: Duration,
    attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
}

/// How long a resolve's answer may be used without asking again when the server does
/// not say (its default `max-age`).
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5);

/// Which version a resolve asks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pick {
    /// This version, if active.
    Version(String),
    /// By weight, the same for the same key.
    Key(String),
    /// By weight, at random.
    Any,
}

/// The answer to a conditional resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revalidated {
    /// The answer held is still the server's (304).
    Unchanged { max_age: Duration },
    /// A new answer, with its validator.
    Changed {
        resolved: Resolved,
        etag: Option<String>,
        max_age: Duration,
    },
}

/// `max-age` of the answer's `Cache-Control`, if it gives one.
fn max_age(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').find_map(|directive| {
        let seconds = directive.trim().strip_prefix("max-age=")?;
        seconds.parse::<u64>().ok().map(Duration::from_secs)
    })
}

/// Whether a request may be sent again when its fate is unknown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeatable {
    Yes,
    No,
}

impl Client {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:8080`) using `key`.
    pub fn builder(base: &str, key: &str) -> ClientBuilder {
        ClientBuilder {
            base: base.to_owned(),
            key: key.to_owned(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            attempts: 3,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }

    /// A client with the defaults; see [`ClientBuilder`].
    pub fn new(base: &str, key: &str) -> Result<Client, Error> {
        Self::builder(base, key).build()
    }

    /// A cache answering resolve from memory (see [`Resolver`]).
    pub fn resolver(&self, options: ResolverOptions) -> Resolver {
        Resolver::new(self.clone(), options)
    }

    /// `GET /api/v1/routes/resolve`: the URL the server gives now for `service`; by
    /// `version` if given, else by weight, sticky for `key` when given.
    pub async fn resolve(
        &self,
        service: &ServiceKey,
        version: Option<&str>,
        key: Option<&str>,
    ) -> Result<Resolved, Error> {
        let mut query = service_query(service);
        query.extend(version.map(|v| ("version", v.to_owned())));
        query.extend(key.map(|k| ("key", k.to_owned())));
        self.call(
            Method::GET,
            "api/v1/routes/resolve",
            &query,
            None,
            Repeatable::Yes,
            None,
        )
        .await
    }

    /// `GET /api/v1/routes/resolve` revalidating an answer held: with `etag` (the
    /// answer's `ETag`), the server answers 304 when its answer would be the same.
    pub async fn resolve_if_changed(
        &self,
        service: &ServiceKey,
        pick: &Pick,
        etag: Option<&str>,
    ) -> Result<Revalidated, Error> {
        let query = pick_query(service, pick);
        let mut request = self.request(Method::GET, "api/v1/routes/resolve", &query, None, None)?;
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let response = self.exchange(request, Repeatable::Yes).await?;
        let max_age = max_age(&response).unwrap_or(DEFAULT_MAX_AGE);
        if response.status() == StatusCode::NOT_MODIFIED {
            return Ok(Revalidated::Unchanged { max_age });
        }
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let resolved = decode(response).await?;
        Ok(Revalidated::Changed {
            resolved,
            etag,
            max_age,
        })
    }

    /// `GET /api/v1/watch`: `service`'s routing state once its generation is later than
    /// `since` (at once when none), or as it is when `wait` runs out.
    pub async fn watch(
        &self,
        service: &ServiceKey,
        since: Option<u64>,
        wait: Duration,
    ) -> Result<WatchState, Error> {
        let mut query = service_query(service);
        query.extend(since.map(|s| ("since", s.to_string())));
        let seconds = wait.as_secs().clamp(1, 60);
        query.push(("wait", seconds.to_string()));
        let extra = Duration::from_secs(seconds);
        self.call(
            Method::GET,
            "api/v1/watch",
            &query,
            None,
            Repeatable::Yes,
            Some(extra),
        )
        .await
    }

    /// `POST /api/v1/routes`.
    pub async fn create_route(&self, route: &NewRoute) -> Result<Route, Error> {
        let body = serde_json::to_value(route).map_err(|e| Error::Decode(e.to_string()))?;
        self.call(
            Method::POST,
            "api/v1/routes",
            &[],
            Some(body),
            Repeatable::No,
            None,
        )
        .await
    }

    /// `GET /api/v1/routes/{id}`.
    pub async fn get_route(&self, id: &str) -> Result<Route, Error> {
        let path = format!("api/v1/routes/{}", segment(id)?);
        self.call(Method::GET, &path, &[], None, Repeatable::Yes, None)
            .await
    }

    /// `GET /api/v1/routes`: one page.
    pub async fn list_routes(&self, query: &RouteQuery) -> Result<Page<Route>, Error> {
        let mut pairs = Vec::new();
        pairs.extend(query.tenant.clone().map(|v| ("tenant", v)));
        pairs.extend(query.service.clone().map(|v| ("service", v)));
        pairs.extend(query.env.clone().map(|v| ("env", v)));
        pairs.extend(query.active.map(|v| ("active", v.to_string())));
        pairs.extend(query.limit.map(|v| ("limit", v.to_string())));
        pairs.extend(query.cursor.clone().map(|v| ("cursor", v)));
        self.call(
            Method::GET,
            "api/v1/routes",
            &pairs,
            None,
            Repeatable::Yes,
            None,
        )
        .await
    }

    /// `POST /api/v1/routes/activate`.
    pub async fn activate(&self, route: &RouteKey) -> Result<Route, Error> {
        let body = serde_json::to_value(route).map_err(|e| Error::Decode(e.to_string()))?;
        self.call(
            Method::POST,
            "api/v1/routes/activate",
            &[],
            Some(body),
            Repeatable::Yes,
            None,
        )
        .await
    }

    /// `POST /api/v1/routes/deactivate`.
    pub async fn deactivate(&self, route: &RouteKey) -> Result<Route, Error> {
        let body = serde_json::to_value(route).map_err(|e| Error::Decode(e.to_string()))?;
        self.call(
            Method::POST,
            "api/v1/routes/deactivate",
            &[],
            Some(body),
            Repeatable::Yes,
            None,
        )
        .await
    }

    /// `PATCH /api/v1/routes/{id}` of the weight, only if the route is still at
    /// `revision` (412 otherwise).
    pub async fn set_weight(&self, id: &str, weight: u8, revision: u64) -> Result<Route, Error> {
        let path = format!("api/v1/routes/{}", segment(id)?);
        let request = self
            .request(
                Method::PATCH,
                &path,
                &[],
                Some(json!({ "weight": weight })),
                None,
            )?
            .header(IF_MATCH, format!("\"{revision}\""));
        // Conditional on the revision: a repeat after an unknown fate is refused (412),
        // never applied twice.
        self.send(request, Repeatable::Yes).await
    }

    /// `DELETE /api/v1/routes/{id}`.
    pub async fn delete_route(&self, id: &str) -> Result<(), Error> {
        let path = format!("api/v1/routes/{}", segment(id)?);
        self.delete(&path).await
    }

    /// `GET /api/v1/routes/resolve?…&explain=true`: how resolve chooses for this
    /// request, as the server explains it (its JSON as it is).
    pub async fn explain(
        &self,
        service: &ServiceKey,
        pick: &Pick,
    ) -> Result<serde_json::Value, Error> {
        let mut query = pick_query(service, pick);
        query.push(("explain", "true".to_owned()));
        self.call(
            Method::GET,
            "api/v1/routes/resolve",
            &query,
            None,
            Repeatable::Yes,
            None,
        )
        .await
    }

    /// `POST /api/v1/routes/rollback`: the service's previous activation state back.
    /// Not sent again after a connection lost mid-request (a repeat would go back one
    /// state more).
    pub async fn rollback(&self, service: &ServiceKey) -> Result<RolledBack, Error> {
        let body = serde_json::to_value(service).map_err(|e| Error::Decode(e.to_string()))?;
        self.call(
            Method::POST,
            "api/v1/routes/rollback",
            &[],
            Some(body),
            Repeatable::No,
            None,
        )
        .await
    }

    /// `GET /api/v1/audit`: a page of the audit log, oldest first, after entry `after`.
    pub async fn audit(
        &self,
        service: &ServiceKey,
        after: Option<i64>,
        limit: Option<u32>,
    ) -> Result<AuditPage, Error> {
        let mut query = service_query(service);
        query.extend(after.map(|a| ("after", a.to_string())));
        query.extend(limit.map(|l| ("limit", l.to_string())));
        self.call(
            Method::GET,
            "api/v1/audit",
            &query,
            None,
            Repeatable::Yes,
            None,
        )
        .await
    }

    /// `GET /api/v1/keys`: the live keys the caller may see.
    pub async fn list_keys(&self) -> Result<Vec<ApiKey>, Error> {
        #[derive(serde::Deserialize)]
        struct Keys {
            items: Vec<ApiKey>,
        }
        let keys: Keys = self
            .call(Method::GET, "api/v1/keys", &[], None, Repeatable::Yes, None)
            .await?;
        Ok(keys.items)
    }

    /// `POST /api/v1/keys`: a new key of `role` (`admin`, `tenant_admin`, `reader`);
    /// the answer is the only one that carries its secret.
    pub async fn create_key(
        &self,
        name: &str,
        role: &str,
        tenant: Option<&str>,
    ) -> Result<CreatedKey, Error> {
        let body = json!({ "name": name, "role": role, "tenant": tenant });
        self.call(
            Method::POST,
            "api/v1/keys",
            &[],
            Some(body),
            Repeatable::No,
            None,
        )
        .await
    }

    /// `DELETE /api/v1/keys/{id}`: revokes a key.
    pub async fn revoke_key(&self, id: &str) -> Result<(), Error> {
        let path = format!("api/v1/keys/{}", segment(id)?);
        self.delete(&path).await
    }

    /// `GET /api/v1/dlq`: a page of the dead-letter queue.
    pub async fn dead_jobs(
        &self,
        tenant: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<DeadJob>, Error> {
        let mut query = Vec::new();
        query.extend(tenant.map(|t| ("tenant", t.to_owned())));
        query.extend(limit.map(|l| ("limit", l.to_string())));
        query.extend(cursor.map(|c| ("cursor", c.to_owned())));
        self.call(
            Method::GET,
            "api/v1/dlq",
            &query,
            None,
            Repeatable::Yes,
            None,
        )
        .await
    }

    /// `DELETE path`: done on any 2xx (a repeat of a delete that took effect answers
    /// 404, told as it is).
    async fn delete(&self, path: &str) -> Result<(), Error> {
        let request = self.request(Method::DELETE, path, &[], None, None)?;
        let response = self.exchange(request, Repeatable::Yes).await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(Error::from_response(response).await)
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
        extra_time: Option<Duration>,
    ) -> Result<RequestBuilder, Error> {
        let url = self
            .base
            .join(path)
            .map_err(|e| Error::Url(e.to_string()))?;
        let mut request = self
            .http
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone())
            .timeout(self.timeout + extra_time.unwrap_or_default());
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Ok(request)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
        repeatable: Repeatable,
        extra_time: Option<Duration>,
    ) -> Result<T, Error> {
        let request = self.request(method, path, query, body, extra_time)?;
        self.send(request, repeatable).await
    }

    /// Sends `request`, again after a failure that allows it, and reads the answer.
    async fn send<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        repeatable: Repeatable,
    ) -> Result<T, Error> {
        let response = self.exchange(request, repeatable).await?;
        decode(response).await
    }

    /// Sends `request`, again after a failure that allows it: an unreachable server (if
    /// the request is repeatable) or a 429 or 503 (after its `Retry-After`). The answer,
    /// whatever its status, once no retry is left or none is allowed.
    async fn exchange(
        &self,
        request: RequestBuilder,
        repeatable: Repeatable,
    ) -> Result<reqwest::Response, Error> {
        let mut attempt = 1;
        loop {
            let this = request
                .try_clone()
                .expect("requests with a body in memory can be cloned");
            let (retry_after, error) = match this.send().await {
                Ok(response) if !is_refusal(response.status()) => return Ok(response),
                Ok(response) if attempt >= self.attempts => return Ok(response),
                Ok(response) => (retry_after(&response), Error::from_response(response).await),
                Err(err) if repeatable == Repeatable::Yes => {
                    (None, Error::Unreachable(err.to_string()))
                }
                Err(err) => return Err(Error::Unreachable(err.to_string())),
            };
            if attempt >= self.attempts {
                return Err(error);
            }
            let wait = retry_after.unwrap_or_else(|| self.backoff_for(attempt));
            tracing::debug!(attempt, ?wait, %error, "retrying a call to traffic-manager");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// The delay before retry `attempt`: doubling from the first, bounded, jittered.
    fn backoff_for(&self, attempt: u32) -> Duration {
        let full = self
            .backoff
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(self.max_backoff);
        full.mul_f64(rand::random_range(0.5..=1.0))
    }
}

/// 429 and 503: the server did not do it, and says to try again.
fn is_refusal(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    )
}

/// `Retry-After` in seconds, if the answer gives it.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// A successful answer's JSON (an empty body reads as `null`), or the error it is.
async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, Error> {
    if !response.status().is_success() {
        return Err(Error::from_response(response).await);
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| Error::Unreachable(e.to_string()))?;
    let body: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
    serde_json::from_slice(body).map_err(|e| Error::Decode(e.to_string()))
}

impl Error {
    /// The error an answer with an error status is: its problem, or one made of its
    /// status when the body is not a problem.
    pub(crate) async fn from_response(response: reqwest::Response) -> Error {
        let status = response.status();
        let bytes = response.bytes().await.unwrap_or_default();
        let problem: Problem = serde_json::from_slice(&bytes).unwrap_or_else(|_| Problem {
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("error").to_owned(),
            ..Problem::default()
        });
        Error::Api {
            status: status.as_u16(),
            problem,
        }
    }
}

/// The query of a resolve of `service` asking for `pick`.
fn pick_query(service: &ServiceKey, pick: &Pick) -> Vec<(&'static str, String)> {
    let mut query = service_query(service);
    match pick {
        Pick::Version(v) => query.push(("version", v.clone())),
        Pick::Key(k) => query.push(("key", k.clone())),
        Pick::Any => {}
    }
    query
}

fn service_query(service: &ServiceKey) -> Vec<(&'static str, String)> {
    vec![
        ("tenant", service.tenant.clone()),
        ("service", service.service.clone()),
        ("env", service.env.clone()),
    ]
}

/// `id` as one path segment: ids are UUIDs, anything else is refused here.
fn segment(id: &str) -> Result<&str, Error> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        Ok(id)
    } else {
        Err(Error::Url(format!("{id:?} is not a route id")))
    }
}
