//! GitHub as a front door. The App's webhook (`routes/github.rs`) checks each delivery's
//! signature and records it once; the worker here takes recorded deliveries from the outbox
//! and does what they ask — a task for an issue handed over, a follow-up for a review on
//! Berth's pull request, a refusal that says why — and answers on GitHub, then rewrites its
//! comment when the task ends. Work is never done while GitHub waits for its answer.

pub mod answers;
pub mod delivery;
pub mod prompt;
mod work;

use std::sync::Arc;
use std::time::Duration;

use berth_github::signature::{self, SignatureError};
use berth_github::GitHubApp;
use berth_proto::Secret;

use crate::{AppState, Settings, Shared};

/// The App's side of the API, when the App and its webhook secret are configured.
pub struct Front {
    pub app: Arc<GitHubApp>,
    secret: Secret,
    pub label: String,
    pub handle: String,
    pub max_age: Duration,
    /// Wakes the worker when a delivery is recorded.
    pub wake: tokio::sync::Notify,
}

impl Front {
    pub fn new(settings: &Settings, shared: &Shared) -> Option<Self> {
        Some(Self {
            app: shared.github_app.clone()?,
            secret: settings.github_webhook_secret.clone()?,
            label: settings.github_trigger_label.clone(),
            handle: settings.github_handle.clone(),
            max_age: Duration::from_secs(settings.github_webhook_max_age_secs),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Checks `X-Hub-Signature-256` against the body as it arrived.
    pub fn verify(&self, body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
        signature::verify(self.secret.expose().as_bytes(), body, header)
    }
}

/// How long the worker holds a message; longer than any one message takes.
const LEASE_MS: i64 = 120_000;

/// Takes GitHub's messages from the outbox until the server shuts down.
pub async fn run(state: AppState) {
    let Some(front) = state.github.clone() else {
        return;
    };
    let mut last_cleanup = tokio::time::Instant::now();
    while !state.shutdown.is_cancelled() {
        let claimed = state.store.claim_outbox("github", LEASE_MS).await;
        match claimed {
            Ok(Some(message)) => work::handle(&state, &front, message).await,
            Ok(None) => {
                tokio::select! {
                    () = front.wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = state.shutdown.cancelled() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "the GitHub worker cannot read the outbox");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        if last_cleanup.elapsed() > Duration::from_secs(600) {
            last_cleanup = tokio::time::Instant::now();
            let age = front.max_age.as_millis() as i64;
            if let Err(err) = state.store.forget_github_deliveries(age).await {
                tracing::warn!(error = %err, "forgetting old GitHub deliveries failed");
            }
        }
    }
}
