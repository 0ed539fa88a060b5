//! `/v1/auth/session`: the web app's sign-in with a pasted API token. The token is checked once
//! and traded for an HttpOnly session cookie, so that the page's scripts never hold a secret
//! and the person stays signed in after closing the tab (docs/web.md says why).

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use berth_proto::{ErrorBody, Me};
use serde::{Deserialize, Serialize};

use crate::accounts::audit;
use crate::accounts::sign_in;
use crate::auth::hash_token;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/auth/session", post(create_session).delete(end_session))
}

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// An API token of the person signing in (`berth_…`).
    pub token: String,
}

/// Trades an API token for a web session: answers who signed in, and sets the `berth_session`
/// cookie (HttpOnly, SameSite=Lax, Secure over https). The token itself is not kept.
#[utoipa::path(post, path = "/v1/auth/session", tag = "auth", request_body = CreateSession,
    responses((status = 201, body = Me, description = "Signed in",
                  headers(("Set-Cookie" = String))),
              (status = 401, body = ErrorBody, description = "`unauthorized`: the token is \
                  unknown, revoked or malformed, or its user is disabled")))]
pub(crate) async fn create_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateSession>,
) -> ApiResult<Response> {
    let wrong =
        || ApiError::unauthorized("this token is unknown or revoked; check it and paste it again");
    let token = request.token.trim();
    if token.is_empty() {
        return Err(wrong());
    }
    let principal = state
        .store
        .authenticate(&hash_token(token))
        .await?
        .ok_or_else(wrong)?;
    let account = state
        .store
        .get_account(principal.user.id)
        .await?
        .filter(|account| account.disabled_at.is_none())
        .ok_or_else(|| ApiError::unauthorized("this user is disabled"))?;
    let (_, secure) = sign_in::public_base(&state, &headers);
    let cookie = sign_in::start_session(&state, &account, secure).await?;
    audit(
        &state,
        Some(account.id),
        "sign_in",
        Some(account.id),
        serde_json::json!({"via": "token", "token_id": principal.token_id}),
    )
    .await;
    let me = Me {
        user_id: principal.user.id,
        name: principal.user.name,
    };
    Ok((
        StatusCode::CREATED,
        [(header::SET_COOKIE, cookie)],
        Json(me),
    )
        .into_response())
}

/// Signs the browser out: ends its session, if any, and clears the cookie.
#[utoipa::path(delete, path = "/v1/auth/session", tag = "auth",
    responses((status = 204, description = "Signed out", headers(("Set-Cookie" = String)))))]
pub(crate) async fn end_session(state: State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    super::auth::logout(state, headers).await
}
