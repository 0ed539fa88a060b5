//! The HTTP API: one router per resource, merged here, with JSON answers for unknown routes.

pub(crate) mod health;
pub(crate) mod tasks;
pub(crate) mod tokens;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::AppState;

pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        .merge(health::router())
        .merge(tasks::router())
        .merge(tokens::router())
        .merge(crate::stream::router())
        .merge(crate::web::router())
        .merge(crate::accounts::router())
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method",
            )
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::accounts::limit_task_creation,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(
            max_body,
            refuse_announced_large_bodies,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

pub(crate) fn body_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "request body is over the server's limit (max_body_bytes)",
    )
}

/// Answers 413 from the headers alone when `Content-Length` is over the limit, without reading
/// the body. Bodies without a length are cut off by `DefaultBodyLimit` as they stream in.
async fn refuse_announced_large_bodies(
    State(max_body): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if announced.is_some_and(|length| length > max_body as u64) {
        return body_too_large().into_response();
    }
    next.run(request).await
}
