//! The HTTP API: one router per resource, merged here, with JSON answers for unknown routes.

pub(crate) mod health;
pub(crate) mod tasks;
pub(crate) mod tokens;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
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
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
