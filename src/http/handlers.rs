//! The API's routes, relative to a base path.

use axum::extract::{FromRequestParts, OriginalUri, Path, RawQuery, State};
use axum::http::header::{ETAG, IF_NONE_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;
use time::OffsetDateTime;

use super::params::Params;
use super::{ApiError, HttpApi};
use crate::{
    InstanceQuery, PurgeFilter, ReadOptions, RuntimeStatus, StateChange, StatusPayload,
    DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE,
};

/// The most rows of a listing page that shows inputs.
pub const MAX_PAGE_WITH_INPUT: u32 = 100;

/// The most ids one batch read (`POST /instances`) takes.
pub const MAX_BATCH_IDS: usize = 100;

/// A listing answer stops adding pages once it holds this many bytes.
pub const LISTING_BYTES: usize = 4 * 1024 * 1024;

/// The header that carries a listing's continuation, both ways.
pub const CONTINUATION_HEADER: &str = "x-ms-continuation-token";

pub(super) fn routes() -> Router<HttpApi> {
    Router::new()
        .route(
            "/instances",
            get(list_instances)
                .delete(purge_instances)
                .post(get_many_instances),
        )
        .route(
            "/instances/",
            get(list_instances)
                .delete(purge_instances)
                .post(get_many_instances),
        )
        .route("/instances/{id}", get(get_instance).delete(delete_instance))
        .route("/instances/{id}/events", get(instance_events))
        .route("/instancecounts", get(instance_counts))
        .route("/instances/{id}/{operation}", post(instance_operation))
        .route(
            "/instances/{id}/{operation}/{argument}",
            post(instance_operation_with_argument),
        )
        .route("/orchestrators/{function}", post(start_orchestration))
        .route("/orchestrators/{function}/{id}", post(start_orchestration))
}

type ApiResult = Result<Response, ApiError>;

/// The path's segments, or the API's JSON error (a segment that is not
/// UTF-8 once percent-decoded, say) instead of the framework's text one.
struct ApiPath<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(segments)) => Ok(ApiPath(segments)),
            Err(rejection) => Err(ApiError::new(rejection.status(), rejection.body_text())),
        }
    }
}

async fn get_instance(
    State(api): State<HttpApi>,
    ApiPath(id): ApiPath<String>,
    OriginalUri(uri): OriginalUri,
    RawQuery(query): RawQuery,
    request_headers: HeaderMap,
) -> ApiResult {
    let params = Params::parse(query.as_deref());
    let show_input = params.bool("showInput", true)?;
    // No history is kept: these are accepted, and nothing is added.
    params.bool("showHistory", false)?;
    params.bool("showHistoryOutput", false)?;
    let error_on_failure = params.bool("returnInternalServerErrorOnFailure", false)?;
    let store = api.store_for(params.get("taskHub"))?;
    // Pollers of the same instance share reads (see `reads`).
    let Some(status) = api
        .inner
        .reads
        .get(api.read_window, &store, &id, show_input)
        .await?
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("instance '{id}' was not found"),
        ));
    };
    let etag = status_etag(&status, show_input);
    let running = !status.runtime_status.is_terminal();
    if if_none_match(&request_headers, &etag) {
        let mut answer = HeaderMap::new();
        answer.insert(ETAG, etag);
        if running {
            answer.insert("retry-after", HeaderValue::from_static("5"));
        }
        return Ok((StatusCode::NOT_MODIFIED, answer).into_response());
    }
    let payload = Json(StatusPayload::new(&status, show_input));
    let mut response = match status.runtime_status {
        RuntimeStatus::Running
        | RuntimeStatus::Pending
        | RuntimeStatus::ContinuedAsNew
        | RuntimeStatus::Suspended => {
            let mut answer = HeaderMap::new();
            // The same status URL, query included, as the original; on the
            // configured public URL or relative, never on the request's
            // Host; without the key.
            if let Ok(location) = HeaderValue::from_str(&api.url_of(&uri)) {
                answer.insert("location", location);
            }
            answer.insert("retry-after", HeaderValue::from_static("5"));
            (StatusCode::ACCEPTED, answer, payload).into_response()
        }
        RuntimeStatus::Failed if error_on_failure => {
            (StatusCode::INTERNAL_SERVER_ERROR, payload).into_response()
        }
        RuntimeStatus::Completed
        | RuntimeStatus::Failed
        | RuntimeStatus::Canceled
        | RuntimeStatus::Terminated => (StatusCode::OK, payload).into_response(),
        // The original answers a state it does not know with 500.
        RuntimeStatus::Unknown => (StatusCode::INTERNAL_SERVER_ERROR, payload).into_response(),
    };
    response.headers_mut().insert(ETAG, etag);
    Ok(response)
}

/// The ETag of a status answer: the row's version and the representation.
fn status_etag(status: &crate::InstanceStatus, show_input: bool) -> HeaderValue {
    let text = format!("{}|{show_input}", status.etag.as_str());
    // Hashed: the row's ETag holds characters a header may not.
    let hash = crate::format::digest::fnv1a(text.as_bytes());
    HeaderValue::from_str(&format!("\"{hash:016x}\"")).expect("hex is header-safe")
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn if_none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Some(tags) = headers.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let etag = etag.to_str().unwrap_or_default();
    tags.split(',')
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

/// The status of one instance as server-sent events (an addition to the
/// Durable Functions API): see `push`.
async fn instance_events(
    State(api): State<HttpApi>,
    ApiPath(id): ApiPath<String>,
    RawQuery(query): RawQuery,
    request_headers: HeaderMap,
) -> ApiResult {
    let params = Params::parse(query.as_deref());
    let store = api.store_for(params.get("taskHub"))?;
    let last_event_id = request_headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    api.inner
        .watches
        .stream(&store, &id, last_event_id, api.push)
        .await
}

/// Counts per runtime status for the listing's filters (an addition to the
/// Durable Functions API, on a route no instance id can take).
async fn instance_counts(State(api): State<HttpApi>, RawQuery(query): RawQuery) -> ApiResult {
    let params = Params::parse(query.as_deref());
    let query = filters(&params)?;
    let store = api.store_for(params.get("taskHub"))?;
    let counts = store.count_by_status(&query).await.map_err(name_errors)?;
    let by_status: serde_json::Map<String, serde_json::Value> = counts
        .iter()
        .map(|(status, n)| (status.name().to_owned(), json!(n)))
        .collect();
    Ok((
        StatusCode::OK,
        Json(json!({"counts": by_status, "total": counts.total()})),
    )
        .into_response())
}

/// The listing filters of a query string.
fn filters(params: &Params) -> Result<InstanceQuery, ApiError> {
    let mut query = InstanceQuery::new().statuses(params.statuses()?);
    if let Some(from) = params.time("createdTimeFrom")? {
        query = query.created_from(from);
    }
    if let Some(to) = params.time("createdTimeTo")? {
        query = query.created_to(to);
    }
    if let Some(prefix) = params.get("instanceIdPrefix") {
        query = query.instance_id_prefix(prefix);
    }
    let names = params.names();
    if !names.is_empty() {
        query = query.names(names);
    }
    Ok(query)
}

/// The store's errors of a filter, named as the query string names them.
fn name_errors(error: crate::Error) -> ApiError {
    match error {
        crate::Error::Invalid {
            field: "continuation token",
            reason,
        } => ApiError::bad_parameter(CONTINUATION_HEADER, reason),
        crate::Error::Invalid {
            field: "orchestrator name",
            reason,
        } => ApiError::bad_parameter("name", reason),
        other => other.into(),
    }
}

async fn list_instances(
    State(api): State<HttpApi>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let params = Params::parse(query.as_deref());
    let show_input = params.bool("showInput", false)?;
    let top = params.top(DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
    // Inputs may be 64 KiB each: pages that carry them hold at most 100
    // rows (the continuation header brings the rest).
    let top = if show_input {
        top.min(MAX_PAGE_WITH_INPUT)
    } else {
        top
    };
    // Outputs are read 100 rows a request, and the answer stops at `top`
    // rows or once it holds LISTING_BYTES: a listing's memory is bounded
    // whatever the outputs' sizes, and its token resumes where it stopped.
    let query = filters(&params)?
        .page_size(top.min(MAX_PAGE_WITH_INPUT))
        .include_input(show_input);
    let token = match headers.get(CONTINUATION_HEADER) {
        None => None,
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| ApiError::bad_parameter(CONTINUATION_HEADER, "is not text"))?;
            // The original sends the literal `null` at the end: a client that
            // echoes it back is at the end, not at the beginning.
            if text.trim().is_empty() || text.trim() == "null" {
                return Ok((StatusCode::OK, Json(Vec::<StatusPayload>::new())).into_response());
            }
            Some(text.to_owned())
        }
    };
    let store = api.store_for(params.get("taskHub"))?;
    let mut body = b"[".to_vec();
    let (mut listed, mut token) = (0u32, token);
    loop {
        let rows = (top - listed).min(MAX_PAGE_WITH_INPUT);
        let page = store
            .query_page(&query.clone().page_size(rows), token.as_deref())
            .await
            .map_err(name_errors)?;
        for status in &page.instances {
            if listed > 0 {
                body.push(b',');
            }
            serde_json::to_writer(&mut body, &StatusPayload::new(status, show_input))
                .expect("a status object serializes");
            listed += 1;
        }
        token = page.continuation_token;
        if token.is_none() || listed >= top || body.len() >= LISTING_BYTES {
            break;
        }
    }
    body.push(b']');
    let mut answer = HeaderMap::new();
    answer.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(next) = token {
        answer.insert(
            CONTINUATION_HEADER,
            HeaderValue::from_str(&next).expect("tokens are header-safe"),
        );
    }
    Ok((StatusCode::OK, answer, body).into_response())
}

/// Many instances in one call: the body is a JSON array of ids; the answer
/// is an array of status objects in the order asked, `null` for an instance
/// that does not exist. An addition to the Durable Functions API: POST on
/// the collection, which the contract leaves unused, so no instance id can
/// be shadowed.
async fn get_many_instances(
    State(api): State<HttpApi>,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> ApiResult {
    let params = Params::parse(query.as_deref());
    let show_input = params.bool("showInput", true)?;
    let ids: Vec<String> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_parameter(
            "body",
            format!("must be a JSON array of instance ids (strings): {e}"),
        )
    })?;
    if ids.len() > MAX_BATCH_IDS {
        return Err(ApiError::bad_parameter(
            "body",
            format!(
                "{} instance ids; one request reads at most {MAX_BATCH_IDS}",
                ids.len()
            ),
        ));
    }
    let store = api.store_for(params.get("taskHub"))?;
    let read = ReadOptions::default().include_input(show_input);
    let found = store.get_many(&ids, read).await.map_err(|e| match e {
        crate::Error::Invalid { reason, .. } => ApiError::bad_parameter("body", reason),
        other => other.into(),
    })?;
    let body: Vec<Option<StatusPayload>> = found
        .iter()
        .map(|status| status.as_ref().map(|s| StatusPayload::new(s, show_input)))
        .collect();
    Ok((StatusCode::OK, Json(body)).into_response())
}

async fn delete_instance(
    State(api): State<HttpApi>,
    ApiPath(id): ApiPath<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let params = Params::parse(query.as_deref());
    let store = api.store_for(params.get("taskHub"))?;
    if store.purge_terminal_instance(&id).await? {
        Ok((StatusCode::OK, Json(json!({"instancesDeleted": 1}))).into_response())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("instance '{id}' was not found"),
        ))
    }
}

async fn purge_instances(State(api): State<HttpApi>, RawQuery(query): RawQuery) -> ApiResult {
    let params = Params::parse(query.as_deref());
    let from = params.time("createdTimeFrom")?.ok_or_else(|| {
        ApiError::bad_parameter("createdTimeFrom", "is required to purge instances")
    })?;
    let to = params
        .time("createdTimeTo")?
        .unwrap_or_else(OffsetDateTime::now_utc);
    let statuses = params.statuses()?;
    let mut filter = PurgeFilter::created_from(from)
        .created_to(to)
        .allow_non_terminal(params.bool("allowNonTerminal", false)?);
    if !statuses.is_empty() {
        filter = filter.statuses(statuses);
    }
    filter.effective_statuses().map_err(|e| match e {
        crate::Error::Invalid { reason, .. } => ApiError::bad_parameter("runtimeStatus", reason),
        other => other.into(),
    })?;
    let store = api.store_for(params.get("taskHub"))?;
    let _one_at_a_time = api.one_purge_at_a_time().await;
    let done = store.purge(&filter).await.map_err(|error| {
        let message = crate::error::chain_text(&error);
        match error {
            crate::Error::PurgeInterrupted { source, .. } => {
                ApiError::new(ApiError::from(*source).status, message)
            }
            other => other.into(),
        }
    })?;
    if done.deleted == 0 {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no instance matched"));
    }
    Ok((
        StatusCode::OK,
        Json(json!({"instancesDeleted": done.deleted})),
    )
        .into_response())
}

async fn instance_operation(
    State(api): State<HttpApi>,
    ApiPath((id, operation)): ApiPath<(String, String)>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let params = Params::parse(query.as_deref());
    let change = match operation.to_ascii_lowercase().as_str() {
        "terminate" => StateChange::Terminate {
            reason: params.get("reason").unwrap_or_default().to_owned(),
        },
        "suspend" => StateChange::Suspend,
        "resume" => StateChange::Resume,
        "rewind" | "restart" | "raiseevent" => return Ok(engine_required(&operation)),
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no operation '{operation}'"),
            ))
        }
    };
    let store = api.store_for(params.get("taskHub"))?;
    store.change_state(&id, &change).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn instance_operation_with_argument(
    ApiPath((_, operation, _)): ApiPath<(String, String, String)>,
) -> ApiResult {
    if operation.eq_ignore_ascii_case("raiseEvent") {
        Ok(engine_required(&operation))
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no operation '{operation}'"),
        ))
    }
}

async fn start_orchestration() -> Response {
    engine_required("start an orchestration")
}

fn engine_required(what: &str) -> Response {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "{what}: this server stores and serves orchestration status and runs no orchestrations; \
             send this to the orchestration engine (the Durable Functions host)"
        ),
    )
    .into_response()
}
