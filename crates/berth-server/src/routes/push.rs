//! `/v1/push/…`: Web Push. The server's VAPID public key for `pushManager.subscribe`, and the
//! caller's subscriptions, one per browser (its endpoint): posting the same endpoint again
//! keeps one subscription. An endpoint is refused when it reaches the server's own network, as
//! a webhook URL is. Where no VAPID key is configured, every route here answers 404
//! `push_disabled`.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use berth_proto::{
    ErrorBody, PushKey, PushSubscription, PushSubscriptionList, SubscribePush, UnsubscribePush,
};
use berth_store::NewPushSubscription;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::push::{browser_keys, WebPush};
use crate::AppState;

/// The most subscriptions (browsers) one user may have.
const MOST_PER_USER: usize = 20;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/push/key", get(push_key)).route(
        "/v1/push/subscriptions",
        get(list_subscriptions).post(subscribe).delete(unsubscribe),
    )
}

/// Web Push, when it is on: taken after the caller and before the body, so that a server
/// without push says so whatever the body holds.
struct PushOn(Arc<WebPush>);

impl FromRequestParts<AppState> for PushOn {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.push.clone().map(PushOn).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "push_disabled",
                "Web Push is not configured on this server (web_push_vapid_key, \
                 web_push_subject)",
            )
        })
    }
}

fn shown(subscription: berth_store::PushSubscription) -> PushSubscription {
    PushSubscription {
        id: subscription.id,
        endpoint: subscription.endpoint,
        created_at: chrono::DateTime::from_timestamp_millis(subscription.created_at)
            .unwrap_or_default(),
    }
}

/// The server's VAPID public key: the `applicationServerKey` browsers subscribe with.
#[utoipa::path(
    get, path = "/v1/push/key", tag = "push",
    responses(
        (status = 200, body = PushKey),
        (status = 404, body = ErrorBody, description = "`push_disabled`: no VAPID key is \
            configured"),
    )
)]
async fn push_key(PushOn(push): PushOn) -> Json<PushKey> {
    Json(PushKey {
        public_key: push.public_key().to_string(),
    })
}

/// Keeps this browser's subscription (`PushSubscription.toJSON()`): 201 when new, 200 when the
/// caller had one at this endpoint (its keys are replaced). Each ending of the caller's tasks
/// is then pushed to it.
#[utoipa::path(
    post, path = "/v1/push/subscriptions", tag = "push", request_body = SubscribePush,
    responses(
        (status = 200, body = PushSubscription, description = "already subscribed"),
        (status = 201, body = PushSubscription),
        (status = 404, body = ErrorBody, description = "`push_disabled`: no VAPID key is \
            configured"),
        (status = 422, body = ErrorBody, description = "`invalid_push_subscription`: the \
            endpoint is not an https URL on a public host, or the keys are not a browser's; \
            `too_many_push_subscriptions`"),
    ),
    security(("bearer" = []))
)]
async fn subscribe(
    State(state): State<AppState>,
    caller: Caller,
    _: PushOn,
    ApiJson(request): ApiJson<SubscribePush>,
) -> ApiResult<(StatusCode, Json<PushSubscription>)> {
    let invalid = |message: String| ApiError::unprocessable("invalid_push_subscription", message);
    let endpoint =
        berth_guard::check_push_endpoint(&request.endpoint, &state.settings.webhook_hosts())
            .map_err(invalid)?;
    let (p256dh, auth) = browser_keys(&request.keys.p256dh, &request.keys.auth).map_err(invalid)?;
    let owner_id = caller.user_id();
    let endpoint = endpoint.to_string();
    let kept = state.store.list_push_subscriptions(owner_id).await?;
    if kept.len() >= MOST_PER_USER && !kept.iter().any(|s| s.endpoint == endpoint) {
        return Err(ApiError::unprocessable(
            "too_many_push_subscriptions",
            format!(
                "a user may have at most {MOST_PER_USER} push subscriptions; remove one \
                 (DELETE /v1/push/subscriptions) first"
            ),
        ));
    }
    let new = NewPushSubscription {
        owner_id,
        endpoint,
        p256dh,
        auth,
    };
    let (subscription, created) = state.store.put_push_subscription(new).await?;
    let status = match created {
        true => StatusCode::CREATED,
        false => StatusCode::OK,
    };
    Ok((status, Json(shown(subscription))))
}

/// The caller's subscriptions, oldest first.
#[utoipa::path(
    get, path = "/v1/push/subscriptions", tag = "push",
    responses(
        (status = 200, body = PushSubscriptionList),
        (status = 404, body = ErrorBody, description = "`push_disabled`: no VAPID key is \
            configured"),
    ),
    security(("bearer" = []))
)]
async fn list_subscriptions(
    State(state): State<AppState>,
    caller: Caller,
    _: PushOn,
) -> ApiResult<Json<PushSubscriptionList>> {
    let found = state
        .store
        .list_push_subscriptions(caller.user_id())
        .await?;
    let subscriptions = found.into_iter().map(shown).collect();
    Ok(Json(PushSubscriptionList { subscriptions }))
}

/// Removes the caller's subscription at an endpoint (signing out of the app does this); nothing
/// more is pushed to it.
#[utoipa::path(
    delete, path = "/v1/push/subscriptions", tag = "push", request_body = UnsubscribePush,
    responses(
        (status = 204),
        (status = 404, body = ErrorBody, description = "`push_disabled`; `not_found`: the caller \
            has no subscription at this endpoint"),
    ),
    security(("bearer" = []))
)]
async fn unsubscribe(
    State(state): State<AppState>,
    caller: Caller,
    _: PushOn,
    ApiJson(request): ApiJson<UnsubscribePush>,
) -> ApiResult<StatusCode> {
    // Kept in its checked form, which differs from what was posted at most in the host's case.
    let endpoint =
        berth_guard::check_push_endpoint(&request.endpoint, &state.settings.webhook_hosts())
            .map_or(request.endpoint, |endpoint| endpoint.to_string());
    let removed = state
        .store
        .delete_push_subscription(caller.user_id(), &endpoint)
        .await?;
    match removed {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::not_found("push subscription")),
    }
}
