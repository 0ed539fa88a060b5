//! `/v1/auth/…`: signing in with GitHub (a browser redirect, or the device flow for the CLI
//! and phones) and signing out; and what the sign-in's GitHub token lets the caller see of
//! their GitHub (`/v1/me/github/…`). What both flows share is in `accounts/`.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_proto::{CreatedToken, ErrorBody};
use serde::{Deserialize, Serialize};

use crate::accounts::audit;
use crate::accounts::github::{DeviceCode, GithubRepository};
use crate::accounts::rate_limits::TooManyRequests;
use crate::accounts::sign_in::{self, SignIn, SignInError, SESSION_COOKIE, STATE_COOKIE};
use crate::auth::{hash_token, issue_token, Caller};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
use crate::AppState;

/// How long a browser has to come back from GitHub.
const STATE_TTL_SECS: u64 = 10 * 60;

const SIGN_IN_REFUSED: &str = "`sign_in_refused`: GitHub refused, or the user is not on the \
    allow-list, or is disabled";
const SIGN_IN_LIMITED: &str = "`rate_limited`: too many sign-in attempts; wait Retry-After seconds";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/github/login", get(web_start))
        .route("/v1/auth/github/callback", get(web_callback))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/auth/device", post(device_start))
        .route("/v1/auth/device/token", post(device_token))
        .route("/v1/me/github/repositories", get(github_repositories))
}

/// Browser sign-in: redirects to GitHub with a fresh `state` (also set as a cookie, to tie the
/// callback to this browser) and a PKCE challenge.
#[utoipa::path(get, path = "/v1/auth/github/login", tag = "auth",
    responses((status = 303, description = "To GitHub's authorize page",
        headers(("Location" = String), ("Set-Cookie" = String))), SignIn))]
pub(crate) async fn web_start(
    SignIn(github): SignIn,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let oauth_state = sign_in::random_string();
    let verifier = sign_in::random_string();
    state
        .store
        .insert_sign_in_state(
            &hash_token(&oauth_state),
            &verifier,
            (STATE_TTL_SECS * 1000) as i64,
        )
        .await?;
    let (base, secure) = sign_in::public_base(&state, &headers);
    let redirect_uri = format!("{base}/v1/auth/github/callback");
    let location = github.authorize_url(
        &redirect_uri,
        &oauth_state,
        &sign_in::pkce_challenge(&verifier),
    );
    let cookie = sign_in::cookie(STATE_COOKIE, &oauth_state, STATE_TTL_SECS, secure);
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(&location)).into_response())
}

#[derive(Deserialize)]
pub(crate) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// Where GitHub sends the browser back; sets the `berth_session` cookie. The `state` must match
/// the cookie and a stored, unused, unexpired state; then the code is exchanged (with the PKCE
/// verifier).
#[utoipa::path(get, path = "/v1/auth/github/callback", tag = "auth",
    params(("code" = Option<String>, Query, description = "From GitHub"),
           ("state" = Option<String>, Query, description = "As sent to GitHub"),
           ("error" = Option<String>, Query, description = "From GitHub, when it refused")),
    responses((status = 303, description = "Signed in; to /",
                  headers(("Location" = String), ("Set-Cookie" = String))),
              (status = 400, description = "`invalid_state`: the state is missing, expired, \
                  used or from another browser; `invalid_request`: no code", body = ErrorBody),
              (status = 403, description = SIGN_IN_REFUSED, body = ErrorBody),
              (status = 429, description = SIGN_IN_LIMITED, body = ErrorBody,
                  headers(("Retry-After" = u64, description = "Seconds to wait"))),
              SignIn))]
pub(crate) async fn web_callback(
    SignIn(github): SignIn,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(callback): ApiQuery<Callback>,
) -> Result<Response, SignInError> {
    if let Some(error) = callback.error {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "sign_in_refused",
            format!("GitHub did not authorise the sign-in: {error}"),
        )
        .into());
    }
    let bad_state = || {
        ApiError::bad_request(
            "invalid_state",
            "sign-in state is missing, expired, already used or from another browser; start again",
        )
    };
    let oauth_state = callback.state.ok_or_else(bad_state)?;
    let code = callback
        .code
        .ok_or_else(|| ApiError::bad_request("invalid_request", "no code from GitHub"))?;
    if sign_in::read_cookie(&headers, STATE_COOKIE) != Some(oauth_state.as_str()) {
        return Err(bad_state().into());
    }
    let verifier = state
        .store
        .take_sign_in_state(&hash_token(&oauth_state))
        .await
        .map_err(ApiError::from)?
        .ok_or_else(bad_state)?;
    let (base, secure) = sign_in::public_base(&state, &headers);
    let redirect_uri = format!("{base}/v1/auth/github/callback");
    let answer = github
        .exchange_code(&code, &redirect_uri, &verifier)
        .await
        .map_err(ApiError::internal)?;
    let Some(access_token) = answer.access_token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "sign_in_refused",
            format!(
                "GitHub refused the code: {}",
                answer
                    .error_description
                    .or(answer.error)
                    .unwrap_or_default()
            ),
        )
        .into());
    };
    let account = sign_in::finish(&state, &access_token, "web").await?;
    let session = sign_in::start_session(&state, &account, secure).await?;
    let clear_state = sign_in::cookie(STATE_COOKIE, "", 0, secure);
    Ok((
        AppendHeaders([
            (header::SET_COOKIE, session),
            (header::SET_COOKIE, clear_state),
        ]),
        Redirect::to("/"),
    )
        .into_response())
}

/// Ends the browser's session (the cookie), if any.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth",
    responses((status = 204, description = "Signed out", headers(("Set-Cookie" = String)))))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if let Some(session) = sign_in::read_cookie(&headers, SESSION_COOKIE) {
        state.store.delete_session(&hash_token(session)).await?;
    }
    let (_, secure) = sign_in::public_base(&state, &headers);
    let clear = sign_in::cookie(SESSION_COOKIE, "", 0, secure);
    Ok(([(header::SET_COOKIE, clear)], StatusCode::NO_CONTENT).into_response())
}

/// Starts GitHub's device flow: show `user_code` and `verification_uri` to the person, then
/// poll `/v1/auth/device/token` every `interval` seconds.
#[utoipa::path(post, path = "/v1/auth/device", tag = "auth",
    responses((status = 200, body = DeviceCode), SignIn))]
pub(crate) async fn device_start(SignIn(github): SignIn) -> ApiResult<Json<DeviceCode>> {
    Ok(Json(
        github.start_device().await.map_err(ApiError::internal)?,
    ))
}

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
pub struct DeviceTokenRequest {
    pub device_code: String,
    /// Name of the API token made for this device.
    #[serde(default)]
    pub name: Option<String>,
}

/// One poll of the device flow. While the person has not finished, answers 400 with code
/// `authorization_pending` or `slow_down` (add 5 s to the interval); then a new API token.
#[utoipa::path(post, path = "/v1/auth/device/token", tag = "auth", request_body = DeviceTokenRequest,
    responses((status = 201, body = CreatedToken),
              (status = 400, body = ErrorBody, description = "`authorization_pending`: poll \
                  again after the interval; `slow_down`: add 5 s to the interval; \
                  `expired_token`: start again; `device_flow_failed`: GitHub refused the code"),
              (status = 403, body = ErrorBody, description = "`access_denied`: the person \
                  declined; `sign_in_refused`: not on the allow-list, or disabled"),
              (status = 429, description = SIGN_IN_LIMITED, body = ErrorBody,
                  headers(("Retry-After" = u64, description = "Seconds to wait"))),
              SignIn))]
pub(crate) async fn device_token(
    SignIn(github): SignIn,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<DeviceTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), SignInError> {
    if let Err(retry_after) = state
        .accounts
        .sign_in_limit
        .take(&format!("device:{}", hash_token(&request.device_code)))
    {
        return Err(SignInError::Limited(TooManyRequests {
            retry_after,
            what: "sign-in attempts",
        }));
    }
    let answer = github
        .poll_device(&request.device_code)
        .await
        .map_err(ApiError::internal)?;
    let Some(access_token) = answer.access_token else {
        let error = answer.error.unwrap_or_default();
        let (status, code, message): (StatusCode, &'static str, &str) = match error.as_str() {
            "authorization_pending" => (
                StatusCode::BAD_REQUEST,
                "authorization_pending",
                "the person has not entered the code yet; poll again after the interval",
            ),
            "slow_down" => (
                StatusCode::BAD_REQUEST,
                "slow_down",
                "polling too fast; add 5 seconds to the interval",
            ),
            "expired_token" => (
                StatusCode::BAD_REQUEST,
                "expired_token",
                "the code expired; start again",
            ),
            "access_denied" => (
                StatusCode::FORBIDDEN,
                "access_denied",
                "the person declined the sign-in",
            ),
            _ => (
                StatusCode::BAD_REQUEST,
                "device_flow_failed",
                "GitHub refused the device code",
            ),
        };
        return Err(ApiError::new(status, code, message).into());
    };
    let account = sign_in::finish(&state, &access_token, "device").await?;
    let name = request
        .name
        .as_deref()
        .map(str::trim)
        .filter(|name| !name.is_empty() && name.len() <= 100)
        .unwrap_or("device");
    let created = issue_token(state.store.as_ref(), account.id, name)
        .await
        .map_err(ApiError::from)?;
    audit(
        &state,
        Some(account.id),
        "token.create",
        Some(account.id),
        serde_json::json!({"token_id": created.info.id, "name": name, "via": "device"}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct GithubRepositories {
    pub repositories: Vec<GithubRepository>,
}

/// The caller's GitHub repositories, most recently pushed first (up to 100), asked of GitHub
/// with the token their GitHub sign-in stored: what the web app suggests for a new task.
#[utoipa::path(get, path = "/v1/me/github/repositories", tag = "auth",
    responses((status = 200, body = GithubRepositories),
              (status = 404, body = ErrorBody, description = "`sign_in_disabled`: GitHub \
                  sign-in is not configured on this server; `no_github_token`: the caller has \
                  not signed in with GitHub, so there is no token to ask with"),
              (status = 502, body = ErrorBody, description = "`github_unavailable`: GitHub \
                  refused the stored token or did not answer")),
    security(("bearer" = [])))]
pub(crate) async fn github_repositories(
    caller: Caller,
    State(state): State<AppState>,
) -> ApiResult<Json<GithubRepositories>> {
    let github = sign_in::github(&state)?;
    let sealed = state.store.get_github_token(caller.user_id()).await?;
    let opened = sealed.and_then(|sealed| state.shared.keyring.as_ref()?.open(&sealed).ok());
    let Some(token) = opened else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_github_token",
            "no GitHub token is stored for you: sign in with GitHub to see your repositories",
        ));
    };
    let repositories = github.repositories(&token).await.map_err(|err| {
        tracing::warn!(error = %err, "GitHub did not list the caller's repositories");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "github_unavailable",
            "GitHub did not list your repositories; sign in with GitHub again if this lasts",
        )
    })?;
    Ok(Json(GithubRepositories { repositories }))
}
