//! One request through the proxy: who sent it, whether the budget allows it, the real key in
//! place of the attempt's token, and the answer streamed back unchanged while its usage is
//! read from a copy.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, OriginalUri};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::json;

use super::attempts::{Attempts, Meter};
use super::usage::{Dialect, UsageReader};
use super::{Pricing, Reach, Upstreams};

pub(super) struct Shared {
    pub upstreams: Upstreams,
    pub reach: Reach,
    pub pricing: Pricing,
    pub http: reqwest::Client,
}

#[derive(Clone)]
pub(super) struct State {
    pub attempts: Arc<Attempts>,
    pub shared: Arc<Shared>,
}

/// Most of a JSON answer read for its usage; answers are passed on whole regardless.
const MAX_METERED_BODY: usize = 8 << 20;

/// Headers that belong to one connection, or that the proxy sets itself.
const NOT_FORWARDED: [&str; 10] = [
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "content-length",
    // Answers are read for their usage, so they come uncompressed.
    "accept-encoding",
];

/// What a handler is given, the same for both APIs.
type Request = (
    axum::extract::State<State>,
    ConnectInfo<SocketAddr>,
    OriginalUri,
    HeaderMap,
    Bytes,
);

pub(super) async fn anthropic(
    state: axum::extract::State<State>,
    peer: ConnectInfo<SocketAddr>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    proxy(Dialect::Anthropic, (state, peer, uri, headers, body)).await
}

pub(super) async fn openai(
    state: axum::extract::State<State>,
    peer: ConnectInfo<SocketAddr>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    proxy(Dialect::OpenAi, (state, peer, uri, headers, body)).await
}

async fn proxy(dialect: Dialect, request: Request) -> Response {
    let (axum::extract::State(state), ConnectInfo(peer), OriginalUri(uri), headers, body) = request;
    if !state.shared.reach.admits(peer.ip()) {
        let message = "the model proxy serves only Berth's task sandboxes";
        return refusal(dialect, StatusCode::FORBIDDEN, "permission_error", message);
    }
    let Some(meter) = token_of(&headers).and_then(|token| state.attempts.meter(token)) else {
        let message = "this token is not a live Berth attempt's proxy token";
        return refusal(
            dialect,
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            message,
        );
    };
    // Counting tokens is not a model turn, and its answer spends nothing.
    let metered = !uri.path().ends_with("/count_tokens");
    if metered {
        if let Err(spent) = meter.start_turn() {
            return refusal(
                dialect,
                StatusCode::PAYMENT_REQUIRED,
                "billing_error",
                &spent,
            );
        }
    }
    let requested_model = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|body| body["model"].as_str().map(str::to_string));
    let upstream = match send(&state.shared, dialect, &uri, &headers, body).await {
        Ok(upstream) => upstream,
        Err(err) => {
            tracing::warn!(error = %err, "the model API could not be reached through the proxy");
            let message = "the model API could not be reached";
            return refusal(dialect, StatusCode::BAD_GATEWAY, "api_error", message);
        }
    };
    let meter = (metered && upstream.status().is_success()).then_some(meter);
    let metering = meter.map(|meter| Metering {
        meter,
        dialect,
        requested_model,
        pricing: state.shared.pricing.clone(),
    });
    passed_back(upstream, metering)
}

/// The attempt's token, as an Anthropic client (`x-api-key`) or an OpenAI one (bearer) sends it.
fn token_of(headers: &HeaderMap) -> Option<&str> {
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    key.or(bearer).map(str::trim)
}

/// The request as the client sent it, to the real API, with the real key in place of the token.
async fn send(
    shared: &Shared,
    dialect: Dialect,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<reqwest::Response, reqwest::Error> {
    let upstreams = &shared.upstreams;
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let (url, key_header, key) = match dialect {
        Dialect::Anthropic => (
            format!(
                "{}{}{query}",
                upstreams.anthropic_base_url.trim_end_matches('/'),
                uri.path()
            ),
            "x-api-key",
            upstreams
                .anthropic_api_key
                .as_ref()
                .map(|key| key.expose().to_string()),
        ),
        Dialect::OpenAi => (
            format!(
                "{}/chat/completions{query}",
                upstreams.openai_base_url.trim_end_matches('/')
            ),
            "authorization",
            upstreams
                .openai_api_key
                .as_ref()
                .map(|key| format!("Bearer {}", key.expose())),
        ),
    };
    let mut forwarded = HeaderMap::new();
    for (name, value) in headers {
        let name_str = name.as_str();
        if NOT_FORWARDED.contains(&name_str)
            || name_str == "x-api-key"
            || name == header::AUTHORIZATION
        {
            continue;
        }
        forwarded.append(name.clone(), value.clone());
    }
    if let Some(key) = key.and_then(|key| HeaderValue::from_str(&key).ok()) {
        forwarded.insert(HeaderName::from_static(key_header), key);
    }
    shared
        .http
        .post(url)
        .headers(forwarded)
        .body(body)
        .send()
        .await
}

/// How one answer's usage is counted once it has passed.
struct Metering {
    meter: Arc<Meter>,
    dialect: Dialect,
    requested_model: Option<String>,
    pricing: Pricing,
}

/// The upstream's answer, streamed back as it comes; a copy of each chunk goes to a task that
/// reads the usage and records it once the answer ends (or the client hangs up).
fn passed_back(upstream: reqwest::Response, metering: Option<Metering>) -> Response {
    let status = upstream.status();
    let mut headers = HeaderMap::new();
    for (name, value) in upstream.headers() {
        if !NOT_FORWARDED.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    let streamed = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let body = match metering {
        None => Body::from_stream(upstream.bytes_stream()),
        Some(metering) => {
            let (copies, received) = futures::channel::mpsc::unbounded::<Bytes>();
            tokio::spawn(metering.count(received, streamed));
            Body::from_stream(upstream.bytes_stream().inspect(move |chunk| {
                if let Ok(chunk) = chunk {
                    let _ = copies.unbounded_send(chunk.clone());
                }
            }))
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

impl Metering {
    async fn count(
        self,
        mut received: futures::channel::mpsc::UnboundedReceiver<Bytes>,
        streamed: bool,
    ) {
        let mut reader = UsageReader::default();
        if streamed {
            let mut events = received
                .map(Ok::<_, std::convert::Infallible>)
                .eventsource();
            while let Some(Ok(event)) = events.next().await {
                reader.read_event(self.dialect, &event.data);
            }
        } else {
            let mut body = Vec::new();
            while let Some(chunk) = received.next().await {
                if body.len() + chunk.len() <= MAX_METERED_BODY {
                    body.extend_from_slice(&chunk);
                }
            }
            reader.read_body(self.dialect, &body);
        }
        let Some(counts) = reader.counts() else {
            return;
        };
        // Priced by the model asked for: an answer may name a dated variant of it.
        let model = self
            .requested_model
            .or(reader.model)
            .unwrap_or_else(|| "unknown".to_string());
        let cost = (self.pricing)(&model, &counts);
        if let Err(err) = self.meter.record(&model, counts, cost).await {
            tracing::info!(error = %err, "the proxy could not record an answer's usage");
        }
    }
}

/// An error in the shape the client's API uses.
fn refusal(dialect: Dialect, status: StatusCode, kind: &str, message: &str) -> Response {
    let body = match dialect {
        Dialect::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
        Dialect::OpenAi => json!({"error": {"type": kind, "message": message, "code": kind}}),
    };
    (status, axum::Json(body)).into_response()
}
