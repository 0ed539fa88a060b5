//! `POST /v1/github/webhook`: the GitHub App's deliveries. The signature is checked on the raw
//! body before anything else reads it; an unsigned, badly signed or stale delivery is refused
//! and nothing is stored. A good one is recorded with its `X-GitHub-Delivery` (a redelivery, or
//! the same body under another id, is answered and does nothing) and queued for the GitHub
//! worker: GitHub gets its answer at once, whatever the work.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use berth_proto::ErrorBody;
use berth_store::NewGithubDelivery;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::github::delivery::event_time;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/github/webhook", post(webhook))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// A delivery from the GitHub App: 202 when recorded and queued, 200 when it was recorded
/// before.
#[utoipa::path(
    post, path = "/v1/github/webhook", tag = "github",
    request_body(content = String, description = "GitHub's JSON payload, signed with the \
        webhook secret in X-Hub-Signature-256", content_type = "application/json"),
    responses(
        (status = 200, description = "already recorded: nothing is done twice"),
        (status = 202, description = "recorded; the work is queued"),
        (status = 400, body = ErrorBody, description = "`invalid_delivery`: no event or delivery \
            id; `invalid_json`: not JSON; `stale_delivery`: older than github_webhook_max_age_secs"),
        (status = 401, body = ErrorBody, description = "`bad_signature`: unsigned, or the \
            signature does not match"),
        (status = 404, body = ErrorBody, description = "`github_disabled`: the GitHub App is not \
            configured"),
    )
)]
async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let front = state.github.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "github_disabled",
            "the GitHub App is not configured on this server (github_app_id, \
             github_app_private_key, github_webhook_secret)",
        )
    })?;
    front
        .verify(&body, header(&headers, "x-hub-signature-256"))
        .map_err(|err| ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", err.to_string()))?;
    let event = header(&headers, "x-github-event")
        .ok_or_else(|| ApiError::bad_request("invalid_delivery", "no X-GitHub-Event header"))?;
    let delivery_id = header(&headers, "x-github-delivery")
        .filter(|id| !id.is_empty() && id.len() <= 100)
        .ok_or_else(|| ApiError::bad_request("invalid_delivery", "no X-GitHub-Delivery header"))?;
    let payload: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("invalid_json", "the delivery is not JSON"))?;
    if event == "ping" {
        return Ok((StatusCode::OK, Json(json!({ "status": "pong" }))));
    }
    if let Some(at) = event_time(event, &payload) {
        let age = chrono::Utc::now() - at;
        if age.to_std().is_ok_and(|age| age > front.max_age) {
            return Err(ApiError::bad_request(
                "stale_delivery",
                format!(
                    "the event happened {} minutes ago, longer than this server takes \
                     (github_webhook_max_age_secs)",
                    age.num_minutes()
                ),
            ));
        }
    }
    let body_sha256: String = Sha256::digest(&body)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let recorded = state
        .store
        .record_github_delivery(NewGithubDelivery {
            delivery_id: delivery_id.to_string(),
            body_sha256,
            event: event.to_string(),
            payload,
        })
        .await?;
    if !recorded {
        return Ok((StatusCode::OK, Json(json!({ "status": "duplicate" }))));
    }
    front.wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(json!({ "status": "queued" }))))
}
