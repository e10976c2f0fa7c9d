//! `resolve?explain=true`: how resolve chooses for a service, from the same snapshot and
//! the same decision resolve reads (see `tm_domain::decide`).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use tm_domain::{ActiveRoute, Outcome, Pick, RoutingSnapshot};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::resolve::checked_query;
use crate::{ApiError, AppState};

/// How resolve chooses for a service (`resolve?explain=true`).
#[derive(Serialize, ToSchema)]
pub(crate) struct Explanation {
    tenant: String,
    service: String,
    env: String,
    /// The service's resolve policy (`healthy_only`, `healthy_or_all`, `last_known_good`);
    /// null when no version is active.
    #[schema(required = true, value_type = Option<tm_domain::ResolvePolicy>)]
    policy: Option<&'static str>,
    /// Which versions serve, and why.
    decision: String,
    /// The service's generation in this instance's snapshot; null when no version is
    /// active.
    #[schema(required = true)]
    generation: Option<u64>,
    snapshot: SnapshotFacts,
    /// Every active version, in version order.
    candidates: Vec<CandidateView>,
    /// How this request's pick is made.
    pick: PickView,
    /// The answer resolve gives for this request now (for a random pick, one draw); null
    /// when it answers 404 or 503.
    #[schema(required = true, value_type = Option<crate::openapi::ResolveAnswerDoc>)]
    answer: Option<Value>,
}

/// The snapshot an explanation is read from.
#[derive(Serialize, ToSchema)]
pub(crate) struct SnapshotFacts {
    /// Seconds since the snapshot was last known to match the store.
    age_seconds: f64,
    /// Active routes it holds.
    routes: usize,
}

/// An active version, as resolve sees it.
#[derive(Serialize, ToSchema)]
#[schema(as = Candidate)]
pub(crate) struct CandidateView {
    version: String,
    #[schema(value_type = tm_domain::UpstreamUrl)]
    url: Value,
    weight: u8,
    healthy: bool,
    /// Its tier in the failover chain (0 first), and that tier's minimum of healthy
    /// versions.
    tier: u8,
    min_healthy: u8,
    /// When it was last seen healthy (Unix seconds); null if never, or not checked.
    #[schema(required = true)]
    last_healthy_at: Option<u32>,
    /// Whether a pick without `version` may choose it.
    serves: bool,
}

/// How a request's pick is made.
#[derive(Serialize, ToSchema)]
#[schema(as = Pick)]
pub(crate) struct PickView {
    /// `version` (asked for by name), `sticky` (by `key`) or `random` (by weight).
    #[schema(value_type = String, pattern = "^(version|sticky|random)$")]
    by: &'static str,
    /// The sticky key, for a sticky pick.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    key: Option<String>,
    /// For a sticky pick: each serving version's rendezvous score for the key; the highest
    /// is the key's version (its bucket).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    scores: Option<Vec<Score>>,
    /// The version chosen: the sticky key's, or the one asked for; null for a random pick
    /// or when none can be.
    #[schema(required = true)]
    version: Option<String>,
}

/// A version's rendezvous score for a sticky key.
#[derive(Serialize, ToSchema)]
pub(crate) struct Score {
    version: String,
    score: f64,
}

fn candidate(route: ActiveRoute<'_>, min_healthy: u8) -> CandidateView {
    let answer: Value = serde_json::from_slice(route.body()).unwrap_or(Value::Null);
    CandidateView {
        version: route.version().to_owned(),
        url: answer.get("url").cloned().unwrap_or(Value::Null),
        weight: route.weight(),
        healthy: route.healthy(),
        tier: route.tier(),
        min_healthy,
        last_healthy_at: Some(route.last_healthy()).filter(|at| *at > 0),
        serves: route.serves(),
    }
}

/// The explanation of the resolve `query` asks for, for `caller` (admin, or a key of the
/// service's tenant), never cached; `None` when it does not ask for one (`explain=false`).
pub(crate) fn explain(
    state: &AppState,
    snapshot: &RoutingSnapshot,
    caller: &Caller,
    query: Option<&str>,
) -> Result<Option<Response>, ApiError> {
    let (asked, query) = checked_query(caller, query)?;
    if !asked.explain {
        return Ok(None);
    }
    let view = snapshot.service(&asked.tenant, &asked.service, &asked.env);
    let key = query.key.as_deref();
    let pick = match (&asked.version, key) {
        (Some(version), _) => Pick::Version(version),
        (None, Some(key)) => Pick::Sticky(key),
        (None, None) => Pick::Random(rand::random()),
    };
    let chosen = snapshot.resolve(&asked.tenant, &asked.service, &asked.env, pick);
    let (scores, by) = match (&asked.version, key, view) {
        (Some(_), _, _) => (None, "version"),
        (None, Some(key), Some(view)) => {
            let (scores, _) = view.sticky_scores(key);
            let scores = scores
                .into_iter()
                .map(|(route, score)| Score {
                    version: route.version().to_owned(),
                    score,
                })
                .collect();
            (Some(scores), "sticky")
        }
        (None, Some(_), None) => (Some(Vec::new()), "sticky"),
        (None, None, _) => (None, "random"),
    };
    let explanation = Explanation {
        tenant: asked.tenant.to_string(),
        service: asked.service.to_string(),
        env: asked.env.to_string(),
        policy: view.map(|v| v.policy().as_str()),
        decision: view
            .map_or(Outcome::NoCandidates, |v| v.outcome())
            .describe(),
        generation: view.map(|v| v.generation()),
        snapshot: SnapshotFacts {
            age_seconds: state.routing.age().as_secs_f64(),
            routes: snapshot.route_count(),
        },
        candidates: view
            .map(|v| {
                v.routes()
                    .map(|route| candidate(route, v.min_healthy(route.tier())))
                    .collect()
            })
            .unwrap_or_default(),
        pick: PickView {
            by,
            key: key.map(str::to_owned),
            scores,
            version: chosen
                .filter(|_| by != "random")
                .map(|route| route.version().to_owned()),
        },
        answer: chosen.and_then(|route| serde_json::from_slice(route.body()).ok()),
    };
    let mut response = Json(explanation).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(Some(response))
}
