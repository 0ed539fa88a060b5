//! `/v1/tokens` and `/v1/me`: the caller's own API tokens and identity.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use berth_proto::{CreateToken, CreatedToken, ErrorBody, Me, TokenId, TokenInfo, TokenList};

use crate::auth::{issue_token, Caller};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/me", get(me))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{id}", delete(revoke_token))
}

/// Who the token belongs to.
#[utoipa::path(
    get, path = "/v1/me", tag = "tokens",
    responses((status = 200, body = Me)),
    security(("bearer" = []))
)]
async fn me(caller: Caller) -> Json<Me> {
    Json(Me {
        user_id: caller.0.user.id,
        name: caller.0.user.name,
    })
}

/// The caller's tokens, revoked ones included; never the secrets.
#[utoipa::path(
    get, path = "/v1/tokens", tag = "tokens",
    responses((status = 200, body = TokenList)),
    security(("bearer" = []))
)]
async fn list_tokens(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<TokenList>> {
    let tokens = state.store.list_tokens(caller.user_id()).await?;
    Ok(Json(TokenList { tokens }))
}

/// A new token for the caller. The secret is in this answer only.
#[utoipa::path(
    post, path = "/v1/tokens", tag = "tokens", request_body = CreateToken,
    responses(
        (status = 201, body = CreatedToken),
        (status = 422, description = "`invalid_name`: the name is empty or over 100 characters",
            body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let name = request.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::unprocessable(
            "invalid_name",
            "name must be 1 to 100 characters",
        ));
    }
    let created = issue_token(state.store.as_ref(), caller.user_id(), name).await?;
    let detail = serde_json::json!({"token_id": created.info.id, "name": name});
    crate::accounts::audit(&state, Some(caller.user_id()), "token.create", None, detail).await;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Revoke one of the caller's tokens; it stops working at once.
#[utoipa::path(
    delete, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = TokenId, Path, description = "Token id (not the secret)")),
    responses((status = 200, body = TokenInfo)),
    security(("bearer" = []))
)]
async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<TokenId>,
) -> ApiResult<Json<TokenInfo>> {
    let revoked = state.store.revoke_token(caller.user_id(), id).await?;
    if revoked.is_some() {
        let detail = serde_json::json!({ "token_id": id });
        crate::accounts::audit(&state, Some(caller.user_id()), "token.revoke", None, detail).await;
    }
    revoked
        .map(Json)
        .ok_or_else(|| ApiError::not_found("token"))
}
