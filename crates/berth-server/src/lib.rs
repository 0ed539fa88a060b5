//! Berth's server: the HTTP API over a [`Store`], started on a listener the caller binds, so
//! that tests run the real thing on port 0.

pub mod accounts;
pub mod auth;
pub mod config;
mod error;
mod extract;
pub mod openapi;
pub mod repo_url;
mod routes;
mod stream;
mod web;

use std::future::Future;
use std::sync::Arc;

use berth_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, Overrides, Secret};
pub use error::{ApiError, ApiResult};

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    /// Cancelled when the server starts shutting down, so that open streams close (with a
    /// "resume" code) instead of holding the shutdown up.
    pub shutdown: CancellationToken,
    /// Sign-in, sealed GitHub tokens and rate limits.
    pub accounts: Arc<accounts::Accounts>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: Config) -> Self {
        Self {
            store,
            accounts: Arc::new(accounts::Accounts::new(&config)),
            config: Arc::new(config),
            shutdown: CancellationToken::new(),
        }
    }
}

/// Serves the API on `listener` until `shutdown` completes, then stops accepting connections
/// and waits for requests in flight to finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let streams = state.shutdown.clone();
    let app = routes::router(state);
    let shutdown = async move {
        shutdown.await;
        streams.cancel();
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
