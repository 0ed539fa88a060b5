//! Berth's test kit. Fakes of the services outside the machine, speaking their real
//! protocols over loopback (the Anthropic API, GitHub, a git server, a Web Push service, a
//! proxy that loses answers the way a phone's network does), and the one test harness every
//! crate uses: throwaway databases on both backends, headless chromium for the web app,
//! programs killed when their test ends, waiting with a limit, and what Berth left on the
//! Docker engine.
pub mod anthropic;
pub mod chromium;
pub mod db;
pub mod docker;
pub mod fly_api;
pub mod git_server;
pub mod github_api;
pub mod github_oauth;
pub mod lossy_proxy;
pub mod postgres_server;
pub mod process;
pub mod push_service;
pub mod refused;
pub mod wait;

pub use anthropic::FakeAnthropic;
pub use fly_api::FakeFlyApi;
pub use git_server::GitServer;
pub use github_api::deliveries::Delivery;
pub use github_api::{ApiRequest, FakeGitHubApi, PullRequest};
pub use github_oauth::FakeGitHubOAuth;
pub use lossy_proxy::LossyProxy;
pub use push_service::FakePushService;
pub use refused::RefusedPort;
pub use wait::eventually;
