//! The dead-letter queue: jobs that failed for good (or ran out of attempts), listed a
//! page at a time, replayed (queued again, attempts reset) or purged. An admin sees
//! every tenant's and the fleet's own jobs; a tenant admin its tenant's.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tm_domain::{FieldErrors, JobId, TenantId};
use tm_store::{DeadJob, DeadPage};

use crate::auth::{Action, Caller};
use crate::extract::ApiQuery;
use crate::guard::WriteKind;
use crate::page::{self, DEAD_JOB_CURSORS};
use crate::{ApiError, AppState};

/// Which page of dead jobs to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadJobQuery {
    /// Only this tenant's; a tenant admin's key lists its own tenant's only.
    #[param(value_type = Option<String>, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    tenant: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page of this listing; any other is a 400.
    #[param(pattern = "^ZDE6[A-Za-z0-9_-]{21}[AQgw]$")]
    cursor: Option<String>,
}

/// Whose dead jobs to purge.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PurgeQuery {
    /// Only this tenant's; a tenant admin's key purges its own tenant's only.
    #[param(value_type = Option<String>, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    tenant: Option<String>,
}

#[derive(Serialize)]
struct DeadJobList {
    items: Vec<DeadJob>,
    next_cursor: Option<String>,
}

#[derive(Serialize)]
struct Purged {
    purged: u64,
}

/// The tenant a listing or purge covers, as for route listings.
fn scope(caller: &Caller, asked: Option<&str>) -> Result<Option<TenantId>, ApiError> {
    let mut errors = FieldErrors::default();
    let asked = errors.optional("tenant", asked, TenantId::parse);
    errors.into_result()?;
    caller.list_scope(Action::ManageJobs, asked)
}

/// A dead job's id from the path; one that is no id names no job.
fn job_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

/// List dead jobs, a page at a time, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/dlq",
    operation_id = "list_dead_jobs",
    tag = "jobs",
    params(DeadJobQuery),
    responses(
        (status = 200, description = "A page of dead jobs", body = crate::openapi::DeadJobListDoc),
        crate::openapi::Problems,
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<DeadJobQuery>,
) -> Result<Response, ApiError> {
    let tenant = scope(&caller, query.tenant.as_deref())?;
    let after = query
        .cursor
        .as_deref()
        .map(|raw| DEAD_JOB_CURSORS.decode::<tm_domain::JobKind>(raw))
        .transpose()?;
    let mut errors = FieldErrors::default();
    let limit = page::limit(query.limit, &mut errors);
    errors.into_result()?;
    // One more than asked tells whether another page exists.
    let asked = DeadPage {
        tenant: tenant.as_ref(),
        after: after.map(|id| id.as_uuid()),
        limit: limit + 1,
    };
    let mut items = state
        .guard
        .read_uncached(|| state.store.dead_jobs(asked))
        .await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items
            .last()
            .map(|job| DEAD_JOB_CURSORS.encode(JobId::from_uuid(job.id)))
    } else {
        None
    };
    Ok(Json(DeadJobList { items, next_cursor }).into_response())
}

/// Queue a dead job again, due now, with its attempts reset.
#[utoipa::path(
    post,
    path = "/api/v1/dlq/{id}/replay",
    operation_id = "replay_dead_job",
    tag = "jobs",
    params(
        ("id" = String, Path, format = "uuid", description = "Job id"),
        crate::openapi::IdempotencyKey,
    ),
    responses(
        (status = 204, description = "Queued again"),
        (status = 409, description = "A live job has this job's deduplication key",
            body = crate::openapi::ProblemDoc, content_type = "application/problem+json"),
        crate::openapi::Problems,
        crate::openapi::IdempotencyProblems,
    ),
)]
pub async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    on_dead_job(
        &state,
        &caller,
        &raw,
        "dead job replayed",
        |id, scope| async move { store.replay_dead_job(id, scope.as_ref()).await },
    )
    .await
}

/// Delete a dead job.
#[utoipa::path(
    delete,
    path = "/api/v1/dlq/{id}",
    operation_id = "purge_dead_job",
    tag = "jobs",
    params(
        ("id" = String, Path, format = "uuid", description = "Job id"),
        crate::openapi::IdempotencyKey,
    ),
    responses(
        (status = 204, description = "Deleted"),
        crate::openapi::Problems,
        crate::openapi::IdempotencyProblems,
    ),
)]
pub async fn purge_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    on_dead_job(
        &state,
        &caller,
        &raw,
        "dead job purged",
        |id, scope| async move { store.purge_dead_job(id, scope.as_ref()).await },
    )
    .await
}

/// Does `act` to the dead job of the path, within the caller's tenant: 204, 404 if
/// there is no such dead job, 409 if a live job holds its key.
async fn on_dead_job<F, Fut>(
    state: &AppState,
    caller: &Caller,
    raw: &str,
    done: &'static str,
    act: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(uuid::Uuid, Option<TenantId>) -> Fut,
    Fut: std::future::Future<Output = Result<(), tm_store::StoreError>>,
{
    let scope = caller.scope(Action::ManageJobs)?.cloned();
    let id = job_id(raw)?;
    state
        .guard
        .write(WriteKind::Ordinary, act(id.as_uuid(), scope))
        .await
        .map_err(|err| match err {
            ApiError::Store(tm_store::StoreError::Conflict) => ApiError::JobKeyInUse,
            other => other,
        })?;
    tracing::info!(job.id = %id, by = %caller.actor().as_str(), "{done}");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Delete every dead job (of one tenant).
#[utoipa::path(
    delete,
    path = "/api/v1/dlq",
    operation_id = "purge_dead_jobs",
    tag = "jobs",
    params(PurgeQuery, crate::openapi::IdempotencyKey),
    responses(
        (status = 200, description = "How many were deleted", body = crate::openapi::PurgedDoc),
        crate::openapi::Problems,
        crate::openapi::IdempotencyProblems,
    ),
)]
pub async fn purge_all(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PurgeQuery>,
) -> Result<Response, ApiError> {
    let tenant = scope(&caller, query.tenant.as_deref())?;
    let purged = state
        .guard
        .write(
            WriteKind::Ordinary,
            state.store.purge_dead_jobs(tenant.as_ref()),
        )
        .await?;
    tracing::info!(purged, by = %caller.actor().as_str(), "dead jobs purged");
    Ok(Json(Purged { purged }).into_response())
}
