//! Berth's server: the HTTP API over a [`Store`], started on a listener the caller binds, so
//! that tests run the real thing on port 0.

pub mod accounts;
pub mod auth;
mod error;
mod extract;
pub mod github;
mod idempotency;
mod measure;
pub mod openapi;
mod outbox;
mod pagination;
pub mod push;
mod realtime;
mod routes;
pub mod settings;
mod task_validation;
pub mod tls;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;

use berth_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::{ApiError, ApiResult};
pub use realtime::{StreamReads, Streams};
pub use settings::{SandboxCeiling, Settings, Shared};

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// The API's own settings.
    pub settings: Arc<Settings>,
    /// What it shares with the runner: git hosts, GitHub, the keyring, sandbox limits.
    pub shared: Arc<Shared>,
    /// Cancelled when the server starts shutting down, so that open streams close (with a
    /// "resume" code) instead of holding the shutdown up.
    pub shutdown: CancellationToken,
    /// GitHub sign-in and rate limits.
    pub accounts: Arc<accounts::Accounts>,
    /// The GitHub App's webhook and worker, when the App is configured.
    pub github: Option<Arc<github::Front>>,
    /// The hubs that read each followed task's new events once for all its streams.
    pub streams: Arc<Streams>,
    /// Web Push, when its VAPID key is configured.
    pub push: Option<Arc<push::WebPush>>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, settings: Settings, shared: Shared) -> Self {
        Self {
            streams: Arc::new(Streams::new(store.clone(), settings.stream_buffer_frames)),
            store,
            accounts: Arc::new(accounts::Accounts::new(&settings, &shared)),
            github: github::Front::new(&settings, &shared).map(Arc::new),
            // The binary has validated the settings; a bad key leaves push off.
            push: push::WebPush::from_settings(&settings)
                .ok()
                .flatten()
                .map(Arc::new),
            settings: Arc::new(settings),
            shared: Arc::new(shared),
            shutdown: CancellationToken::new(),
        }
    }
}

/// Serves the API on `listener` until `shutdown` completes, then stops accepting connections
/// and waits for requests in flight to finish. The GitHub worker and the webhook and push
/// senders run beside it, and stop with it.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, shutdown, None).await
}

/// [`serve`], over HTTPS when `tls` is given: a certificate chain and its private key, PEM.
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    tls: Option<tls::Certificate>,
) -> std::io::Result<()> {
    let streams = state.shutdown.clone();
    let workers = [
        tokio::spawn(github::run(state.clone())),
        tokio::spawn(webhooks::sender::run(state.clone())),
        tokio::spawn(push::sender::run(state.clone())),
    ];
    tokio::spawn(state.streams.clone().route_notices(streams.clone()));
    let app = routes::router(state);
    let shutdown = async move {
        shutdown.await;
        streams.cancel();
    };
    let served = match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(certificate) => tls::serve(listener, app, certificate, shutdown).await,
    };
    // A delivery cut short is sent again (its lease runs out): at least once, never lost.
    for worker in workers {
        if tokio::time::timeout(std::time::Duration::from_secs(5), worker)
            .await
            .is_err()
        {
            tracing::info!("a background worker was stopped mid-delivery");
        }
    }
    served
}
