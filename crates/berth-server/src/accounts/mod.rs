//! Accounts: GitHub sign-in (browser and device flow), web sessions, the allow-list, admins,
//! sealed GitHub tokens, rate limits, the audit log, and the repository host check.

pub mod crypto;
pub mod github;
pub mod limits;
pub mod repo_host;
pub(crate) mod routes;
mod sign_in;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_proto::UserId;

pub use crypto::{rotate_keys, Keyring};
pub use repo_host::resolve_repo_host;
pub(crate) use routes::router;
pub use sign_in::SESSION_COOKIE;

use crate::auth::Caller;
use crate::{AppState, Config};

/// What the accounts code keeps for the life of the server.
pub struct Accounts {
    pub github: Option<github::GitHub>,
    pub keyring: Option<Keyring>,
    pub task_limit: limits::RateLimit,
    pub sign_in_limit: limits::RateLimit,
}

impl Accounts {
    pub fn new(config: &Config) -> Self {
        Self {
            github: github::GitHub::from_config(config),
            keyring: Keyring::from_config(config).ok().flatten(),
            task_limit: limits::RateLimit::new(
                config.rate_limit_task_burst,
                config.rate_limit_tasks_per_minute,
            ),
            sign_in_limit: limits::RateLimit::new(
                config.rate_limit_sign_in_burst,
                config.rate_limit_sign_ins_per_minute,
            ),
        }
    }
}

/// The accounts part of `Config::validate`.
pub fn validate_config(config: &Config) -> Result<(), String> {
    for (name, url) in [
        ("github_web_url", &config.github_web_url),
        ("github_api_url", &config.github_api_url),
    ] {
        if url::Url::parse(url).is_err() {
            return Err(format!("{name} {url:?} is not a URL"));
        }
    }
    if let Some(public) = &config.public_url {
        if !(public.starts_with("https://") || public.starts_with("http://")) {
            return Err(format!(
                "public_url {public:?} must start with https:// (or http://)"
            ));
        }
    }
    Keyring::from_config(config)?;
    if config.github_client_id.is_some() && config.encryption_key.is_none() {
        return Err(
            "GitHub sign-in is on (github_client_id is set) but encryption_key is not: users' \
             GitHub tokens must be stored encrypted. Make a key with `openssl rand -base64 32` \
             and set it as encryption_key (or BERTH_ENCRYPTION_KEY)"
                .into(),
        );
    }
    if config.session_ttl_secs < 60 {
        return Err("session_ttl_secs must be at least 60".into());
    }
    if config.rate_limit_task_burst == 0
        || config.rate_limit_tasks_per_minute == 0
        || config.rate_limit_sign_in_burst == 0
        || config.rate_limit_sign_ins_per_minute == 0
    {
        return Err("rate_limit_* settings must be at least 1".into());
    }
    Ok(())
}

/// Records one line of the audit log; a failure to record is logged, not fatal.
pub(crate) async fn audit(
    state: &AppState,
    actor: Option<UserId>,
    action: &str,
    subject: Option<UserId>,
    detail: serde_json::Value,
) {
    if let Err(err) = state
        .store
        .append_audit(actor, action, subject, detail)
        .await
    {
        tracing::error!(%err, action, "could not write the audit log");
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
            return limits::TooManyRequests {
                retry_after,
                what: "tasks created",
            }
            .into_response();
        }
    }
    next.run(Request::from_parts(parts, body)).await
}

/// The session id in the request's cookie, if any.
pub(crate) fn sign_in_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    sign_in::read_cookie(headers, SESSION_COOKIE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_without_a_key_is_refused_with_how_to_make_one() {
        let config = Config {
            github_client_id: Some("id".into()),
            ..Config::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("encryption_key"), "{err}");
        assert!(err.contains("openssl rand -base64 32"), "{err}");
        let config = Config {
            encryption_key: Some(crate::Secret::new("bm90IDMyIGJ5dGVz")),
            ..config
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("must be 32 bytes"), "{err}");
    }
}
