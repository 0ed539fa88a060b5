//! The realtime machinery behind the stream endpoints (`routes/streams.rs`): who may open a
//! stream, producers that replay what a client missed and then follow live, and the WebSocket
//! and Server-Sent Events transports that carry their frames. See docs/streaming.md.

mod credentials;
mod fanout;
mod follow;
mod frame;
mod hub;
mod sse;
mod ws;

use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use berth_proto::close_code;
use berth_store::Principal;
use tokio::sync::{mpsc, oneshot};

use crate::auth::hash_token;
use crate::error::ApiError;
use crate::AppState;
pub use fanout::{StreamReads, Streams};
pub(crate) use follow::{decode_cursor, follow_task, follow_user};
use follow::{Outbox, Stopped};
use frame::Frame;

/// WebSocket subprotocols of this form carry a ticket: browsers cannot set headers.
const TICKET_PROTOCOL: &str = "berth.ticket.";
/// What each connection reads from its client at a time. Clients send only pongs and closes,
/// a few bytes each (a longer message makes the buffer grow, up to `MAX_CLIENT_MESSAGE`); the
/// buffer is allocated and zeroed whole for every open stream, so it is kept small.
const READ_BUFFER: usize = 512;
const WRITE_BUFFER: usize = 16 * 1024;
const MAX_CLIENT_MESSAGE: usize = 16 * 1024;

/// The query string of a stream: where to resume, and a ticket where headers cannot be set.
#[derive(Debug, Default)]
pub(crate) struct StreamQuery {
    pub after: Option<String>,
    pub ticket: Option<String>,
}

impl StreamQuery {
    /// Reads the query string leniently (the first of each parameter counts, others are
    /// ignored): the ticket is a credential, and credentials are read before anything else of
    /// the request can be refused.
    pub(crate) fn parse(raw: Option<&str>) -> Self {
        let mut query = Self::default();
        for (key, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            let slot = match key.as_ref() {
                "after" => &mut query.after,
                "ticket" => &mut query.ticket,
                _ => continue,
            };
            slot.get_or_insert_with(|| value.into_owned());
        }
        query
    }
}

/// Who opens a stream, and with what: a bearer token, or a ticket (in the query or the
/// subprotocol) standing for the token or session it was made with. The stream lives no
/// longer than that credential.
pub(crate) async fn stream_principal(
    state: &AppState,
    headers: &HeaderMap,
    query: &StreamQuery,
) -> Result<Principal, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let principal = state.store.authenticate(&hash_token(token.trim())).await?;
        return principal.ok_or_else(|| ApiError::unauthorized("token is unknown or revoked"));
    }
    let ticket = query.ticket.clone().or_else(|| protocol_ticket(headers));
    let Some(ticket) = ticket else {
        return Err(ApiError::unauthorized(
            "send `Authorization: Bearer <token>` or a stream ticket",
        ));
    };
    let principal = state
        .store
        .redeem_stream_ticket(&hash_token(&ticket))
        .await?;
    principal.ok_or_else(|| {
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

/// Starts the producer of the user who opened the stream and hands its frames to the
/// transport the request asks for; or tells a caller without the right (over WebSocket, with
/// the 4401 close code).
pub(crate) async fn respond<P, F>(
    state: AppState,
    headers: HeaderMap,
    query: StreamQuery,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    opened: Result<(Principal, P), ApiError>,
) -> Response
where
    P: FnOnce(AppState, Principal, Outbox) -> F + Send + 'static,
    F: std::future::Future<Output = Result<(), Stopped>> + Send + 'static,
{
    let ping = Duration::from_secs(state.settings.stream_ping_secs);
    let stall = Duration::from_secs(state.settings.stream_stall_secs);
    let (frames_in, frames_out) = mpsc::channel(state.settings.stream_buffer_frames);
    let (close_in, close_out) = oneshot::channel();
    let ticketed = query.ticket.is_some() || protocol_ticket(&headers).is_some();
    let mut response = match (upgrade, opened) {
        (Ok(upgrade), opened) => {
            let upgrade = match protocol_ticket(&headers) {
                Some(ticket) => upgrade.protocols([format!("{TICKET_PROTOCOL}{ticket}")]),
                None => upgrade,
            };
            upgrade
                .read_buffer_size(READ_BUFFER)
                .write_buffer_size(WRITE_BUFFER)
                .max_message_size(MAX_CLIENT_MESSAGE)
                .on_upgrade(move |socket| async move {
                    match opened {
                        Ok((principal, producer)) => {
                            spawn_producer(state, principal, producer, frames_in, close_in, stall);
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
        (Err(_), Ok((principal, producer))) => {
            spawn_producer(state, principal, producer, frames_in, close_in, stall);
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
    principal: Principal,
    producer: P,
    frames: mpsc::Sender<Frame>,
    close: oneshot::Sender<(u16, String)>,
    stall: Duration,
) where
    P: FnOnce(AppState, Principal, Outbox) -> F + Send + 'static,
    F: std::future::Future<Output = Result<(), Stopped>> + Send + 'static,
{
    tokio::spawn(async move {
        let shutdown = state.shutdown.clone();
        let outcome = producer(state, principal, Outbox { frames, stall }).await;
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
                "signed out: the token was revoked, the session ended or the account disabled"
                    .to_string(),
            ),
            Err(Stopped::Failed) => (1011, "internal error; resume".to_string()),
        };
        let _ = close.send(reason);
    });
}
