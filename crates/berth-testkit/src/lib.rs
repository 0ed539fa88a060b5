//! Fakes of the services outside the machine, speaking their real protocols over loopback,
//! and a proxy that loses answers the way a phone's network does.
pub mod anthropic;
pub mod git_server;
pub mod github_api;
pub mod github_oauth;
pub mod lossy_proxy;

pub use anthropic::FakeAnthropic;
pub use git_server::GitServer;
pub use github_api::{ApiRequest, FakeGitHubApi, PullRequest};
pub use github_oauth::FakeGitHubOAuth;
pub use lossy_proxy::LossyProxy;
