//! Berth's one way of talking to GitHub as a GitHub App: checking the signature of the
//! webhooks it sends ([`signature`]), authenticating as the App with a JWT and as one of its
//! installations with a short-lived token scoped to one repository ([`app`]), and the REST
//! calls Berth makes with that token ([`repository`]); pull requests and their checks
//! ([`pulls`], [`checks`]). The API uses it to take work from
//! GitHub and answer there; the runner uses it to clone, push and open pull requests. Tokens
//! stay on the host: nothing here is ever handed to a sandbox.

pub mod app;
pub mod checks;
pub mod pulls;
pub mod repository;
pub mod rest;
pub mod signature;

pub use app::{AppCredentials, GitHubApp};
pub use repository::{Comment, Repository, ReviewComment};
pub use rest::Rest;

/// What a call to GitHub answered when it did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitHubError {
    /// The HTTP status GitHub answered, `None` when no answer came.
    pub status: Option<u16>,
    pub message: String,
}

impl GitHubError {
    pub(crate) fn new(status: Option<u16>, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for GitHubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(status) => write!(f, "GitHub answered {status}: {}", self.message),
            None => write!(f, "GitHub could not be reached: {}", self.message),
        }
    }
}

impl std::error::Error for GitHubError {}

pub type Result<T, E = GitHubError> = std::result::Result<T, E>;

/// The `User-Agent` GitHub requires of every caller.
pub const USER_AGENT: &str = concat!("berth/", env!("CARGO_PKG_VERSION"));
/// The REST API version Berth is written against.
pub const API_VERSION: &str = "2022-11-28";
