//! The HTTP API: one router per resource, merged here under the layers every request passes
//! (tracing, the body limit, the task-creation rate limit), with JSON answers for unknown routes,
//! for methods a route does not take, and for a handler that panics.

pub(crate) mod admin;
pub(crate) mod auth;
pub(crate) mod environments;
pub(crate) mod github;
pub(crate) mod health;
pub(crate) mod pull_requests;
pub(crate) mod push;
pub(crate) mod session;
pub(crate) mod streams;
pub(crate) mod tasks;
pub(crate) mod tokens;
pub(crate) mod web;
pub(crate) mod webhooks;

use std::any::Any;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::{Request, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::{Level, Span};

use crate::error::ApiError;
use crate::AppState;

const REQUEST_ID: &str = "x-request-id";

pub fn router(state: AppState) -> Router {
    let max_body = state.settings.max_body_bytes;
    Router::new()
        .merge(health::router())
        .merge(tasks::router())
        .merge(pull_requests::router())
        .merge(tokens::router())
        .merge(auth::router())
        .merge(session::router())
        .merge(admin::router())
        .merge(streams::router())
        .merge(web::router())
        .merge(webhooks::router())
        .merge(push::router())
        .merge(environments::router())
        .merge(github::router())
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
            crate::accounts::rate_limits::limit_task_creation,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(panic_answer))
        .layer(middleware::from_fn(crate::measure::time_requests))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// The span every line logged while answering a request sits in: the request's id (the
/// client's `X-Request-Id`, or one made here and sent back), and its route as a template, so
/// that no query string (a stream ticket) reaches the log.
fn request_span(request: &Request<Body>) -> Span {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    tracing::info_span!("request", request_id = id, method = %request.method(), route)
}

/// A handler that panicked answers 500 `internal` like any other bug, instead of dropping the
/// connection; the panic's message goes to the log.
fn panic_answer(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    ApiError::internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_a_json_500() {
        let app: Router = Router::new()
            .route("/boom", get(|| async { panic!("boom") as &str }))
            .layer(CatchPanicLayer::custom(panic_answer));
        let request = Request::get("/boom").body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: berth_proto::ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.error.code, "internal");
        assert!(
            !body.error.message.contains("boom"),
            "the cause stays in the log"
        );
    }
}
