//! `/v1/webhooks`: the caller's outgoing webhook endpoints. A URL is read as strictly as a
//! repository's and refused when it reaches the server's own network; the signing secret is
//! shown once, in the answer that creates the endpoint.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use berth_proto::{CreateWebhook, ErrorBody, Webhook, WebhookFormat, WebhookId, WebhookList};
use berth_store::{NewWebhook, WebhookEndpoint};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::webhooks::signing;
use crate::AppState;

/// The most endpoints one user may have.
const MOST_PER_USER: usize = 20;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks", get(list_webhooks).post(create_webhook))
        .route("/v1/webhooks/{id}", delete(delete_webhook))
}

fn shown(endpoint: WebhookEndpoint, secret: Option<String>) -> Webhook {
    Webhook {
        id: endpoint.id,
        url: endpoint.url,
        format: WebhookFormat::parse(&endpoint.format).unwrap_or_default(),
        created_at: chrono::DateTime::from_timestamp_millis(endpoint.created_at)
            .unwrap_or_default(),
        secret,
    }
}

/// Registers an endpoint for the caller's task events. The secret is in this answer only.
#[utoipa::path(
    post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses(
        (status = 201, body = Webhook),
        (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "invalid_webhook_url, too_many_webhooks"),
    ),
    security(("bearer" = []))
)]
async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<Webhook>)> {
    let url = berth_guard::check_webhook_url(&request.url, &state.settings.webhook_hosts())
        .map_err(|message| ApiError::unprocessable("invalid_webhook_url", message))?;
    let owner_id = caller.user_id();
    if state.store.list_webhooks(owner_id).await?.len() >= MOST_PER_USER {
        return Err(ApiError::unprocessable(
            "too_many_webhooks",
            format!("a user may have at most {MOST_PER_USER} webhook endpoints"),
        ));
    }
    let secret = signing::new_secret();
    let endpoint = state
        .store
        .create_webhook(NewWebhook {
            owner_id,
            url: url.to_string(),
            secret: secret.clone(),
            format: request.format.as_str().to_string(),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(shown(endpoint, Some(secret)))))
}

/// The caller's endpoints, without their secrets.
#[utoipa::path(
    get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = WebhookList), (status = 401, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<WebhookList>> {
    let found = state.store.list_webhooks(caller.user_id()).await?;
    let webhooks = found.into_iter().map(|e| shown(e, None)).collect();
    Ok(Json(WebhookList { webhooks }))
}

/// Removes one of the caller's endpoints; nothing more is sent to it.
#[utoipa::path(
    delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "the endpoint's id")),
    responses(
        (status = 204),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<WebhookId>,
) -> ApiResult<StatusCode> {
    match state.store.delete_webhook(caller.user_id(), id).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::not_found("webhook")),
    }
}
