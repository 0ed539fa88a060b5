//! `/v1/auth/…` (sign-in, sign-out, device flow) and `/v1/admin/…` (users, audit log).

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_proto::{CreatedToken, ErrorBody, TaskStatus, UserId};
use berth_store::{Account, AuditEntry, TaskQuery};
use serde::{Deserialize, Serialize};

use super::sign_in::{self, SignInError, SESSION_COOKIE, STATE_COOKIE};
use super::{audit, github::DeviceCode};
use crate::auth::{hash_token, issue_token, Caller};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::AppState;

/// How long a browser has to come back from GitHub.
const STATE_TTL_SECS: u64 = 10 * 60;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/github/login", get(web_start))
        .route("/v1/auth/github/callback", get(web_callback))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/auth/device", post(device_start))
        .route("/v1/auth/device/token", post(device_token))
        .route("/v1/admin/users", get(list_users))
        .route("/v1/admin/users/{id}/disable", post(disable_user))
        .route("/v1/admin/audit", get(list_audit))
}

/// Sends the browser to GitHub with a fresh `state` (also set as a cookie, to tie the
/// callback to this browser) and a PKCE challenge.
/// Browser sign-in: redirects to GitHub with a fresh `state` and a PKCE challenge.
#[utoipa::path(get, path = "/v1/auth/github/login", tag = "auth",
    responses((status = 303, description = "To GitHub's authorize page"), (status = 404, body = ErrorBody)))]
pub(crate) async fn web_start(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let github = sign_in::github(&state)?;
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

/// GitHub sends the browser back here. The `state` must match the cookie and a stored,
/// unused, unexpired state; then the code is exchanged (with the PKCE verifier).
/// Where GitHub sends the browser back; sets the `berth_session` cookie.
#[utoipa::path(get, path = "/v1/auth/github/callback", tag = "auth",
    params(("code" = Option<String>, Query, description = "From GitHub"),
           ("state" = Option<String>, Query, description = "As sent to GitHub")),
    responses((status = 303, description = "Signed in; to /"),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 429, body = ErrorBody)))]
pub(crate) async fn web_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(callback): Query<Callback>,
) -> Result<Response, SignInError> {
    let github = sign_in::github(&state)?;
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
/// Ends the browser's session.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", responses((status = 204)))]
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
    responses((status = 200, body = DeviceCode), (status = 404, body = ErrorBody)))]
pub(crate) async fn device_start(State(state): State<AppState>) -> ApiResult<Json<DeviceCode>> {
    let github = sign_in::github(&state)?;
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
              (status = 400, body = ErrorBody, description = "`authorization_pending`, `slow_down`, `expired_token`"),
              (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn device_token(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<DeviceTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), SignInError> {
    let github = sign_in::github(&state)?;
    if let Err(retry_after) = state
        .accounts
        .sign_in_limit
        .take(&format!("device:{}", hash_token(&request.device_code)))
    {
        return Err(SignInError::Limited(super::limits::TooManyRequests {
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

/// The caller, if an admin who is not disabled.
async fn admin(state: &AppState, caller: &Caller) -> ApiResult<Account> {
    match state.store.get_account(caller.user_id()).await? {
        Some(account) if account.is_admin && account.disabled_at.is_none() => Ok(account),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this needs an admin",
        )),
    }
}

/// A user as admins see it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserView {
    id: UserId,
    name: String,
    github_id: Option<i64>,
    login: Option<String>,
    is_admin: bool,
    /// When the user was disabled (ms since the epoch), if they are.
    disabled_at: Option<i64>,
    created_at: i64,
}

impl From<Account> for UserView {
    fn from(a: Account) -> Self {
        Self {
            id: a.id,
            name: a.name,
            github_id: a.github_id,
            login: a.login,
            is_admin: a.is_admin,
            disabled_at: a.disabled_at,
            created_at: a.created_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserList {
    users: Vec<UserView>,
}

/// Every user (admins only).
#[utoipa::path(get, path = "/v1/admin/users", tag = "admin",
    responses((status = 200, body = UserList), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<UserList>> {
    admin(&state, &caller).await?;
    let users = state.store.list_accounts().await?;
    Ok(Json(UserList {
        users: users.into_iter().map(UserView::from).collect(),
    }))
}

/// Disables a user: their tokens and sessions stop at once, and their unfinished tasks are
/// cancelled.
#[utoipa::path(post, path = "/v1/admin/users/{id}/disable", tag = "admin",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = UserView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn disable_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<Json<UserView>> {
    let actor = admin(&state, &caller).await?;
    let account = state
        .store
        .disable_user(id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let mut cancelled = 0;
    for status in [TaskStatus::Queued, TaskStatus::Running] {
        loop {
            let query = TaskQuery {
                status: Some(status),
                before: None,
                limit: 200,
            };
            let tasks = state.store.list_tasks(id, query).await?;
            if tasks.is_empty() {
                break;
            }
            for task in &tasks {
                state.store.cancel_task(id, task.id).await?;
                cancelled += 1;
            }
            if tasks.len() < 200 {
                break;
            }
        }
    }
    audit(
        &state,
        Some(actor.id),
        "admin.disable_user",
        Some(id),
        serde_json::json!({"login": account.login, "tasks_cancelled": cancelled}),
    )
    .await;
    Ok(Json(account.into()))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// How many entries, newest first (default 100, at most 1000).
    limit: Option<i64>,
}

/// One line of the audit log.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditView {
    seq: i64,
    actor_id: Option<UserId>,
    action: String,
    subject_id: Option<UserId>,
    detail: serde_json::Value,
    created_at: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditList {
    entries: Vec<AuditView>,
}

/// The audit log, newest first (admins only).
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", params(AuditQuery),
    responses((status = 200, body = AuditList), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Json<AuditList>> {
    admin(&state, &caller).await?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let entries = state.store.list_audit(limit).await?;
    let entries = entries
        .into_iter()
        .map(|e: AuditEntry| AuditView {
            seq: e.seq,
            actor_id: e.actor_id,
            action: e.action,
            subject_id: e.subject_id,
            detail: e.detail,
            created_at: e.created_at,
        })
        .collect();
    Ok(Json(AuditList { entries }))
}
