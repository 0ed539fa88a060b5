//! The API's metrics, through the `metrics` facade: how long requests take by route template
//! and status, and how many streams are open. The binary decides whether and where they are
//! exported (docs/operations.md lists them).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// Times each request under its route's template (`/v1/tasks/{id}`), never its path, so that
/// the series stay few.
pub(crate) async fn time_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::histogram!("berth_http_request_duration_seconds", &labels).record(started.elapsed());
    response
}

/// Counts an open stream for as long as it is held.
pub(crate) struct OpenStream(&'static str);

impl OpenStream {
    pub(crate) fn new(transport: &'static str) -> Self {
        metrics::gauge!("berth_open_streams", "transport" => transport).increment(1);
        Self(transport)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!("berth_open_streams", "transport" => self.0).decrement(1);
    }
}
