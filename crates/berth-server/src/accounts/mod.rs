//! Accounts: what GitHub sign-in (browser and device flow) rests on — web sessions, the
//! allow-list, admins, sealed GitHub tokens — and rate limits and the audit log. Their
//! endpoints are in `routes/auth.rs` and `routes/admin.rs`.

pub mod github;
pub mod rate_limits;
pub(crate) mod sign_in;

use std::sync::Arc;

use berth_proto::UserId;

pub use sign_in::SESSION_COOKIE;

use crate::{AppState, Settings, Shared};

/// What the accounts code keeps for the life of the server.
pub struct Accounts {
    pub github: Option<Arc<github::GitHub>>,
    pub task_limit: rate_limits::RateLimit,
    pub sign_in_limit: rate_limits::RateLimit,
}

impl Accounts {
    pub fn new(settings: &Settings, shared: &Shared) -> Self {
        Self {
            github: github::GitHub::new(settings, shared).map(Arc::new),
            task_limit: rate_limits::RateLimit::new(
                settings.rate_limit_task_burst,
                settings.rate_limit_tasks_per_minute,
            ),
            sign_in_limit: rate_limits::RateLimit::new(
                settings.rate_limit_sign_in_burst,
                settings.rate_limit_sign_ins_per_minute,
            ),
        }
    }
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

/// The session id in the request's cookie, if any.
pub(crate) fn sign_in_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    sign_in::read_cookie(headers, SESSION_COOKIE)
}
