//! Fakes of the services outside the machine, speaking their real protocols over loopback.
pub mod anthropic;
pub mod git_server;
pub mod github_api;
pub mod github_oauth;
