//! The metered model proxy: agent CLIs that run inside a task's sandbox (Claude Code) talk to
//! the model through it, with a token good for one attempt, so the real key never enters the
//! sandbox. It passes requests and answers through byte for byte (the CLIs use API features
//! newer than Berth's own client), counts each answer's tokens and cost against the task, and
//! refuses requests once the task's budget is spent. It serves the Anthropic Messages API and
//! the OpenAI-compatible chat API.

mod attempts;
mod forward;
mod usage;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{head, post};
use axum::Router;
use berth_proto::Secret;

pub use attempts::{Admission, Pass};
pub use usage::TokenCounts;

use attempts::Attempts;

/// Prices an answer: dollars for these tokens of this model, `None` for a model without a
/// price. The binary gives it the agent's price table.
pub type Pricing = Arc<dyn Fn(&str, &TokenCounts) -> Option<f64> + Send + Sync>;

/// Where requests go on, and with which keys.
#[derive(Clone, Debug)]
pub struct Upstreams {
    /// Such as `https://api.anthropic.com`; `/v1/messages` is added.
    pub anthropic_base_url: String,
    pub anthropic_api_key: Option<Secret>,
    /// Such as `http://127.0.0.1:8080/v1`; `/chat/completions` is added.
    pub openai_base_url: String,
    pub openai_api_key: Option<Secret>,
}

/// Who may connect: addresses of the sandboxes' network, except the host's own address on it
/// (the proxy listens there, so the host's own processes would come from it).
#[derive(Clone, Copy, Debug)]
pub struct Reach {
    pub network: ipnet::IpNet,
    pub host: IpAddr,
}

impl Reach {
    pub fn admits(&self, peer: IpAddr) -> bool {
        self.network.contains(&peer) && peer != self.host
    }
}

/// The proxy's shared state; cloning it shares it.
#[derive(Clone)]
pub struct ModelProxy {
    attempts: Arc<Attempts>,
    shared: Arc<forward::Shared>,
}

impl ModelProxy {
    pub fn new(upstreams: Upstreams, reach: Reach, pricing: Pricing) -> Self {
        let shared = forward::Shared {
            upstreams,
            reach,
            pricing,
            http: reqwest::Client::new(),
        };
        ModelProxy {
            attempts: Arc::default(),
            shared: Arc::new(shared),
        }
    }

    /// Gives an attempt its token; the token dies with the pass.
    pub fn admit(&self, admission: Admission) -> Pass {
        self.attempts.admit(admission)
    }

    pub fn router(&self) -> Router {
        let state = forward::State {
            attempts: self.attempts.clone(),
            shared: self.shared.clone(),
        };
        Router::new()
            .route("/v1/messages", post(forward::anthropic))
            .route("/v1/messages/count_tokens", post(forward::anthropic))
            .route("/v1/chat/completions", post(forward::openai))
            // Claude Code checks that its base URL answers before it starts.
            .route("/api/hello", head(|| async {}))
            // Long conversations make large requests; the model API has its own limit.
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(state)
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let service = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service)
            .with_graceful_shutdown(shutdown)
            .await
    }
}
