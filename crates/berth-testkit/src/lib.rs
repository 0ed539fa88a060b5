//! berth-testkit
pub mod github_oauth;
