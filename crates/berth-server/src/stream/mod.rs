//! Realtime streams of a task's events (`/v1/tasks/{id}/stream`) and of all the caller's
//! tasks (`/v1/stream`), over WebSocket or Server-Sent Events, resumable from the last
//! sequence number (or cursor) a client saw. See docs/streaming.md for the protocol.

mod follow;
mod sse;
mod ws;

use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use berth_proto::{close_code, ErrorBody, StreamTicket, TaskId};
use berth_store::User;
use rand::RngCore;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::auth::{hash_token, Caller};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiPath;
use crate::AppState;
use follow::{Outbox, Stopped};

/// WebSocket subprotocols of this form carry a ticket: browsers cannot set headers.
const TICKET_PROTOCOL: &str = "berth.ticket.";
/// Each connection reads at most this much from the client (it only sends pongs and closes).
const READ_BUFFER: usize = 4 * 1024;
const WRITE_BUFFER: usize = 16 * 1024;
const MAX_CLIENT_MESSAGE: usize = 16 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tasks/{id}/stream", get(task_stream))
        .route("/v1/stream", get(user_stream))
        .route("/v1/stream-tickets", post(create_ticket))
}

#[derive(Debug, Default, Deserialize)]
struct StreamQuery {
    after: Option<String>,
    ticket: Option<String>,
}

/// Make a single-use ticket for opening a stream where headers cannot be set (browsers).
#[utoipa::path(
    post, path = "/v1/stream-tickets", tag = "streams",
    responses((status = 201, body = StreamTicket), (status = 401, body = ErrorBody)),
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
    let ttl = state.config.stream_ticket_ttl_secs;
    state
        .store
        .insert_stream_ticket(caller.user_id(), &hash_token(&ticket), ttl as i64 * 1000)
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

/// Who opens a stream: a bearer token, or a ticket in the query or the subprotocol.
async fn stream_user(
    state: &AppState,
    headers: &HeaderMap,
    query: &StreamQuery,
) -> Result<User, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let principal = state.store.authenticate(&hash_token(token.trim())).await?;
        return principal
            .map(|p| p.user)
            .ok_or_else(|| ApiError::unauthorized("token is unknown or revoked"));
    }
    let ticket = query.ticket.clone().or_else(|| protocol_ticket(headers));
    let Some(ticket) = ticket else {
        return Err(ApiError::unauthorized(
            "send `Authorization: Bearer <token>` or a stream ticket",
        ));
    };
    let user = state
        .store
        .redeem_stream_ticket(&hash_token(&ticket))
        .await?;
    user.ok_or_else(|| {
        ApiError::unauthorized("stream ticket is unknown, used or expired; get a new one")
    })
}

fn protocol_ticket(headers: &HeaderMap) -> Option<String> {
    let offered = headers.get(header::SEC_WEBSOCKET_PROTOCOL)?.to_str().ok()?;
    offered
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix(TICKET_PROTOCOL).map(str::to_string))
}

/// Follow one task's events: WebSocket on an upgrade request, SSE otherwise.
async fn task_stream(
    State(state): State<AppState>,
    ApiPath(task_id): ApiPath<TaskId>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let after = query
        .after
        .clone()
        .or(last_event_id)
        .unwrap_or_else(|| "0".into());
    let Some(after) = after.parse::<i64>().ok().filter(|after| *after >= 0) else {
        return ApiError::bad_request(
            "invalid_after",
            "after must be a sequence number, 0 or more",
        )
        .into_response();
    };
    let user = stream_user(&state, &headers, &query).await;
    if let (Err(_), Ok(user)) = (&upgrade, &user) {
        // Over SSE the answer's status can still say "not found", as the REST API does.
        match state.store.get_task(user.id, task_id).await {
            Ok(Some(_)) => {}
            Ok(None) => return ApiError::not_found("task").into_response(),
            Err(err) => return ApiError::from(err).into_response(),
        }
    }
    let producer = move |state: AppState, user: User, out| {
        follow::follow_task(
            state.store.clone(),
            user.id,
            task_id,
            after,
            out,
            state.shutdown.clone(),
        )
    };
    respond(state, headers, query, upgrade, user, producer).await
}

/// Follow every task of the caller's: status changes, results, usage.
async fn user_stream(
    State(state): State<AppState>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let after = query
        .after
        .clone()
        .or(last_event_id)
        .unwrap_or_else(|| "0".into());
    let Some(after) = follow::decode_cursor(&after) else {
        return ApiError::bad_request(
            "invalid_cursor",
            "after must be a cursor this server gave out",
        )
        .into_response();
    };
    let user = stream_user(&state, &headers, &query).await;
    let producer = move |state: AppState, user: User, out| {
        follow::follow_user(
            state.store.clone(),
            user.id,
            after,
            out,
            state.shutdown.clone(),
        )
    };
    respond(state, headers, query, upgrade, user, producer).await
}

/// Starts the producer and hands its frames to the transport the request asks for.
async fn respond<P, F>(
    state: AppState,
    headers: HeaderMap,
    query: StreamQuery,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    user: Result<User, ApiError>,
    producer: P,
) -> Response
where
    P: FnOnce(AppState, User, Outbox) -> F + Send + 'static,
    F: std::future::Future<Output = Result<(), Stopped>> + Send + 'static,
{
    let ping = Duration::from_secs(state.config.stream_ping_secs);
    let stall = Duration::from_secs(state.config.stream_stall_secs);
    let (frames_in, frames_out) = mpsc::channel(state.config.stream_buffer_frames);
    let (close_in, close_out) = oneshot::channel();
    let ticketed = query.ticket.is_some() || protocol_ticket(&headers).is_some();
    let mut response = match (upgrade, user) {
        (Ok(upgrade), user) => {
            let upgrade = match protocol_ticket(&headers) {
                Some(ticket) => upgrade.protocols([format!("{TICKET_PROTOCOL}{ticket}")]),
                None => upgrade,
            };
            upgrade
                .read_buffer_size(READ_BUFFER)
                .write_buffer_size(WRITE_BUFFER)
                .max_message_size(MAX_CLIENT_MESSAGE)
                .on_upgrade(move |socket| async move {
                    match user {
                        Ok(user) => {
                            spawn_producer(state, user, producer, frames_in, close_in, stall);
                            ws::pump(socket, frames_out, close_out, ping, stall).await;
                        }
                        Err(_) => {
                            let _ =
                                close_in.send((close_code::UNAUTHORIZED, "unauthorized".into()));
                            drop(frames_in);
                            ws::pump(socket, frames_out, close_out, ping, stall).await;
                        }
                    }
                })
        }
        (Err(_), Err(err)) => return err.into_response(),
        (Err(_), Ok(user)) => {
            spawn_producer(state, user, producer, frames_in, close_in, stall);
            sse::respond(frames_out, close_out).into_response()
        }
    };
    if ticketed {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn spawn_producer<P, F>(
    state: AppState,
    user: User,
    producer: P,
    frames: mpsc::Sender<berth_proto::StreamFrame>,
    close: oneshot::Sender<(u16, String)>,
    stall: Duration,
) where
    P: FnOnce(AppState, User, Outbox) -> F + Send + 'static,
    F: std::future::Future<Output = Result<(), Stopped>> + Send + 'static,
{
    tokio::spawn(async move {
        let shutdown = state.shutdown.clone();
        let outcome = producer(state, user, Outbox { frames, stall }).await;
        // Once shutdown has begun, whatever stopped the producer (the store closing under it,
        // say), the client should resume elsewhere.
        let outcome = match outcome {
            Err(Stopped::Failed) if shutdown.is_cancelled() => Err(Stopped::ShuttingDown),
            other => other,
        };
        let reason = match outcome {
            Ok(()) => (1000, "task ended".to_string()),
            Err(Stopped::NotFound) => (close_code::NOT_FOUND, "not found".to_string()),
            Err(Stopped::SlowConsumer) => (
                close_code::SLOW_CONSUMER,
                "slow consumer; resume from your last sequence number".to_string(),
            ),
            Err(Stopped::ShuttingDown) => (
                close_code::SHUTTING_DOWN,
                "server shutting down; resume".to_string(),
            ),
            Err(Stopped::Gone) => return,
            Err(Stopped::Unauthorized) => (
                close_code::UNAUTHORIZED,
                "the account was disabled".to_string(),
            ),
            Err(Stopped::Failed) => (1011, "internal error; resume".to_string()),
        };
        let _ = close.send(reason);
    });
}
