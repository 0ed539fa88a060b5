//! `/v1/tasks/{id}/stream`, `/v1/stream` and `/v1/stream-tickets`: following a task, or all of
//! the caller's tasks, live; and the tickets browsers open those streams with. The machinery
//! behind them is in `realtime/`.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use berth_proto::{StreamTicket, TaskId};
use berth_store::Principal;
use rand::RngCore;

use crate::auth::{hash_token, Caller};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiPath;
use crate::realtime::{self, respond, stream_principal, StreamQuery};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tasks/{id}/stream", get(task_stream))
        .route("/v1/stream", get(user_stream))
        .route("/v1/stream-tickets", post(create_ticket))
}

/// Make a single-use ticket for opening a stream where headers cannot be set (browsers).
#[utoipa::path(
    post, path = "/v1/stream-tickets", tag = "streams",
    responses((status = 201, body = StreamTicket)),
    security(("bearer" = []))
)]
pub(crate) async fn create_ticket(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<(
    StatusCode,
    [(header::HeaderName, &'static str); 1],
    Json<StreamTicket>,
)> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let ticket = format!("bst_{}", URL_SAFE_NO_PAD.encode(bytes));
    let ttl = state.settings.stream_ticket_ttl_secs;
    state
        .store
        .insert_stream_ticket(&caller.0, &hash_token(&ticket), ttl as i64 * 1000)
        .await?;
    let body = StreamTicket {
        ticket,
        expires_in_secs: ttl,
    };
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(body),
    ))
}

/// Follow one task's events: WebSocket on an upgrade request, SSE otherwise.
async fn task_stream(
    State(state): State<AppState>,
    task_id: Result<ApiPath<TaskId>, ApiError>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let query = StreamQuery::parse(raw_query.as_deref());
    let opened = match stream_principal(&state, &headers, &query).await {
        // Only a caller with the right to streams learns what else is wrong with the request.
        Ok(principal) => {
            let ApiPath(task_id) = match task_id {
                Ok(task_id) => task_id,
                Err(err) => return err.into_response(),
            };
            let after = resume_after(&query, &headers);
            let Some(after) = after.parse::<i64>().ok().filter(|after| *after >= 0) else {
                return ApiError::bad_request(
                    "invalid_after",
                    "after must be a sequence number, 0 or more",
                )
                .into_response();
            };
            if upgrade.is_err() {
                // Over SSE the answer's status can still say "not found", as the REST API does.
                match state.store.get_task(principal.user.id, task_id).await {
                    Ok(Some(_)) => {}
                    Ok(None) => return ApiError::not_found("task").into_response(),
                    Err(err) => return ApiError::from(err).into_response(),
                }
            }
            let producer = move |state: AppState, principal: Principal, out| {
                realtime::follow_task(
                    state.streams.clone(),
                    principal,
                    task_id,
                    after,
                    out,
                    state.shutdown.clone(),
                )
            };
            Ok((principal, producer))
        }
        Err(err) => Err(err),
    };
    respond(state, headers, query, upgrade, opened).await
}

/// Follow every task of the caller's: status changes, results, usage.
async fn user_stream(
    State(state): State<AppState>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let query = StreamQuery::parse(raw_query.as_deref());
    let opened = match stream_principal(&state, &headers, &query).await {
        // Only a caller with the right to streams learns what else is wrong with the request.
        Ok(principal) => {
            let Some(after) = realtime::decode_cursor(&resume_after(&query, &headers)) else {
                return ApiError::bad_request(
                    "invalid_cursor",
                    "after must be a cursor this server gave out",
                )
                .into_response();
            };
            let producer = move |state: AppState, principal: Principal, out| {
                realtime::follow_user(
                    state.streams.clone(),
                    principal,
                    after,
                    out,
                    state.shutdown.clone(),
                )
            };
            Ok((principal, producer))
        }
        Err(err) => Err(err),
    };
    respond(state, headers, query, upgrade, opened).await
}

/// Where the client resumes: `after` in the query, or the `Last-Event-ID` an `EventSource`
/// sends when it reconnects; the start otherwise.
fn resume_after(query: &StreamQuery, headers: &HeaderMap) -> String {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    query
        .after
        .clone()
        .or(last_event_id)
        .unwrap_or_else(|| "0".into())
}
