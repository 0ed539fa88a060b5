//! The guard on outside addresses Berth connects to. The API checks a repository URL when a
//! task is created and the runner checks it again, resolving its host, before it clones: both
//! reach this crate, and neither reaches the other. Both use the URL's normalised form only.
//! Outgoing webhooks and Web Push messages are checked here too.

mod allowed;
mod push_host;
mod repo_host;
mod repo_url;
mod webhook_host;

pub use allowed::{repository_on, AllowedHost};
pub use push_host::{check_push_endpoint, resolve_push_host, PushEndpoint};
pub use repo_host::{check_repo_url, is_internal, resolve_repo_host};
pub use repo_url::{RepoHost, RepoUrl, Scheme};
pub use webhook_host::{check_webhook_url, resolve_webhook_host};
