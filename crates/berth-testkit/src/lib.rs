//! Fakes of the services outside the machine, speaking their real protocols over loopback.
pub mod anthropic;
pub mod github_oauth;
