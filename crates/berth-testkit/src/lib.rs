//! Fakes of the services outside the machine, speaking their real protocols over loopback.
pub mod anthropic;
pub mod git_server;
pub mod github_api;
pub mod github_oauth;

pub use anthropic::FakeAnthropic;
pub use git_server::GitServer;
pub use github_api::{ApiRequest, FakeGitHubApi, PullRequest};
pub use github_oauth::FakeGitHubOAuth;
