//! A small browser page: sign in with an API token, list your tasks, follow one live. It is
//! static: everything it shows comes from the public API, like any other client.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::AppState;

/// Scripts and styles from this server only; no inline code, no framing by other sites.
const SECURITY: [(header::HeaderName, &str); 3] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; frame-ancestors 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", include_str!("index.html")) }),
        )
        .route(
            "/app.js",
            get(|| async { page("text/javascript; charset=utf-8", include_str!("app.js")) }),
        )
        .route(
            "/app.css",
            get(|| async { page("text/css; charset=utf-8", include_str!("app.css")) }),
        )
}

fn page(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    let [a, b, c] = SECURITY;
    ([(header::CONTENT_TYPE, content_type), a, b, c], body)
}
