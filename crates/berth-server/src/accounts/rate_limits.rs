//! Rate limits on creating tasks and on signing in: per-key token buckets, a burst then a
//! steady rate. A refused request learns how long to wait, which the API sends as `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

pub struct RateLimit {
    burst: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimit {
    pub fn new(burst: u32, per_minute: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_sec: f64::from(per_minute.max(1)) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or says how long until one is there.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 10_000 {
            // Forget full buckets, so that the map does not grow with every key ever seen.
            let (burst, per_sec) = (self.burst, self.per_sec);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * per_sec < burst
            });
        }
        let (tokens, at) = buckets.entry(key.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_sec).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_sec))
        }
    }
}

/// A 429 with `Retry-After` in whole seconds (at least one).
pub struct TooManyRequests {
    pub retry_after: Duration,
    pub what: &'static str,
}

impl IntoResponse for TooManyRequests {
    fn into_response(self) -> Response {
        let secs = self.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many {}; try again in {secs} s", self.what),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        response
    }
}

/// Middleware: task creation (`POST /v1/tasks`) takes a token from the caller's bucket.
pub(crate) async fn limit_task_creation(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST || request.uri().path() != "/v1/tasks" {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let caller = <Caller as axum::extract::FromRequestParts<AppState>>::from_request_parts(
        &mut parts, &state,
    )
    .await;
    if let Ok(caller) = caller {
        let key = caller.user_id().to_string();
        if let Err(retry_after) = state.accounts.task_limit.take(&key) {
            return TooManyRequests {
                retry_after,
                what: "tasks created",
            }
            .into_response();
        }
    }
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_a_wait() {
        let limit = RateLimit::new(2, 60);
        assert!(limit.take("a").is_ok());
        assert!(limit.take("a").is_ok());
        let wait = limit.take("a").unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert!(limit.take("b").is_ok());
    }
}
