//! `/v1/environments` and `/v1/setup-secrets`: the prepared environments of a repository
//! (state, log, rebuild) and the caller's setup secrets for it.
//!
//! Who sees an environment: anyone who has had a task on its repository, and admins; to
//! anyone else it does not exist (404), so a repository's URL tells nothing. Setup secrets are
//! the caller's own: listed by name only, never shown again once sealed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_proto::{
    Environment, EnvironmentList, ErrorBody, PutSetupSecret, RepositoryQuery, SetupSecretList,
    SetupSecretQuery,
};
use berth_store::{EnvironmentRecord, SetupSecret};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::AppState;

/// The longest secret value kept (a registry token is far shorter).
const MOST_SECRET_BYTES: usize = 8192;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/environments", get(list_environments))
        .route("/v1/environments/{key}", get(get_environment))
        .route("/v1/environments/{key}/rebuild", post(rebuild_environment))
        .route(
            "/v1/setup-secrets",
            get(list_setup_secrets)
                .put(put_setup_secret)
                .delete(delete_setup_secret),
        )
}

/// Whether the caller may see the repository's environments.
async fn may_see(state: &AppState, caller: &Caller, repo_url: &str) -> ApiResult<bool> {
    if state
        .store
        .has_task_on_repo(caller.user_id(), repo_url)
        .await?
    {
        return Ok(true);
    }
    let account = state.store.get_account(caller.user_id()).await?;
    Ok(account.is_some_and(|account| account.is_admin && account.disabled_at.is_none()))
}

fn shown(record: EnvironmentRecord, with_log: bool) -> Environment {
    let time = |ms| chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    Environment {
        key: record.key,
        repo_url: record.repo_url,
        node_id: record.node_id,
        image: record.image,
        state: record.state,
        size_bytes: record.size_bytes,
        last_used: time(record.last_used),
        created_at: time(record.created_at),
        log: with_log.then_some(record.log),
    }
}

/// The environments kept for a repository, on every runner node, without their logs.
#[utoipa::path(
    get, path = "/v1/environments", tag = "environments", params(RepositoryQuery),
    responses(
        (status = 200, body = EnvironmentList, description = "empty when the caller has had no \
            task on the repository and is not an admin"),
        (status = 400, body = ErrorBody, description = "`invalid_query`: no repo_url"),
        (status = 401, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list_environments(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<RepositoryQuery>,
) -> ApiResult<Json<EnvironmentList>> {
    let environments = match may_see(&state, &caller, &query.repo_url).await? {
        true => state.store.list_environments(&query.repo_url).await?,
        false => Vec::new(),
    };
    let environments = environments.into_iter().map(|e| shown(e, false)).collect();
    Ok(Json(EnvironmentList { environments }))
}

/// The environments under one cache key (one per runner node that keeps it), with the
/// setup's log.
#[utoipa::path(
    get, path = "/v1/environments/{key}", tag = "environments",
    params(("key" = String, Path, description = "the environment's cache key")),
    responses(
        (status = 200, body = EnvironmentList),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn get_environment(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<EnvironmentList>> {
    let found = visible(&state, &caller, &key).await?;
    let environments = found.into_iter().map(|e| shown(e, true)).collect();
    Ok(Json(EnvironmentList { environments }))
}

/// Marks the environment stale: each runner node drops its image and runs the setup again
/// before the next task on it. Answers the environments as they now stand.
#[utoipa::path(
    post, path = "/v1/environments/{key}/rebuild", tag = "environments",
    params(("key" = String, Path, description = "the environment's cache key")),
    responses(
        (status = 202, body = EnvironmentList),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn rebuild_environment(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<EnvironmentList>)> {
    visible(&state, &caller, &key).await?;
    state.store.mark_environment_stale(&key).await?;
    let now = state.store.get_environment(&key).await?;
    let environments = now.into_iter().map(|e| shown(e, false)).collect();
    Ok((StatusCode::ACCEPTED, Json(EnvironmentList { environments })))
}

/// The records under `key`, or 404 when there are none or the caller may not see them.
async fn visible(
    state: &AppState,
    caller: &Caller,
    key: &str,
) -> ApiResult<Vec<EnvironmentRecord>> {
    let found = state.store.get_environment(key).await?;
    let Some(first) = found.first() else {
        return Err(ApiError::not_found("environment"));
    };
    match may_see(state, caller, &first.repo_url).await? {
        true => Ok(found),
        false => Err(ApiError::not_found("environment")),
    }
}

/// The names of the caller's setup secrets for a repository.
#[utoipa::path(
    get, path = "/v1/setup-secrets", tag = "environments", params(RepositoryQuery),
    responses(
        (status = 200, body = SetupSecretList),
        (status = 400, body = ErrorBody, description = "`invalid_query`: no repo_url"),
        (status = 401, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list_setup_secrets(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<RepositoryQuery>,
) -> ApiResult<Json<SetupSecretList>> {
    let kept = (state.store)
        .list_setup_secrets(caller.user_id(), &query.repo_url)
        .await?;
    let names = kept.into_iter().map(|secret| secret.name).collect();
    Ok(Json(SetupSecretList { names }))
}

/// Seals and keeps a secret for the setup of the caller's tasks on a repository (replacing one
/// of the same name). Only the setup's command sees it, as a variable.
#[utoipa::path(
    put, path = "/v1/setup-secrets", tag = "environments", request_body = PutSetupSecret,
    responses(
        (status = 204),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`sealing_disabled`: the server has no \
            encryption_key to seal secrets with"),
        (status = 422, body = ErrorBody, description = "`invalid_setup_secret`: a bad name, \
            an empty or too long value, or no repo_url"),
    ),
    security(("bearer" = []))
)]
async fn put_setup_secret(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<PutSetupSecret>,
) -> ApiResult<StatusCode> {
    check_secret(&request).map_err(|m| ApiError::unprocessable("invalid_setup_secret", m))?;
    let Some(keyring) = state.shared.keyring.as_ref() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "sealing_disabled",
            "this server has no encryption_key, so it cannot keep secrets",
        ));
    };
    let secret = SetupSecret {
        repo_url: request.repo_url,
        name: request.name,
        sealed: keyring.seal(caller.user_id(), &request.value),
    };
    state.store.put_setup_secret(&secret).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn check_secret(request: &PutSetupSecret) -> Result<(), String> {
    let name = &request.name;
    let valid_name = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128;
    if !valid_name {
        return Err(format!(
            "name {name:?} must be letters, digits and '_' (at most 128), not starting with a digit"
        ));
    }
    if request.value.is_empty() || request.value.len() > MOST_SECRET_BYTES {
        return Err(format!("value must be 1 to {MOST_SECRET_BYTES} bytes"));
    }
    if request.repo_url.trim().is_empty() || request.repo_url.len() > 2048 {
        return Err("repo_url must be the repository's clone URL".into());
    }
    Ok(())
}

/// Removes one of the caller's setup secrets.
#[utoipa::path(
    delete, path = "/v1/setup-secrets", tag = "environments", params(SetupSecretQuery),
    responses(
        (status = 204),
        (status = 400, body = ErrorBody, description = "`invalid_query`: no repo_url or name"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn delete_setup_secret(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<SetupSecretQuery>,
) -> ApiResult<StatusCode> {
    let deleted = (state.store)
        .delete_setup_secret(caller.user_id(), &query.repo_url, &query.name)
        .await?;
    match deleted {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::not_found("setup secret")),
    }
}
