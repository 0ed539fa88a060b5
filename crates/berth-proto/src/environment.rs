//! Per-repository environments as the API shows them (the prepared image each runner node
//! keeps, its state and the setup's log), and the names of a user's setup secrets.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A repository's prepared environment on one runner node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Environment {
    /// The cache key: a hash over the environment file, its inputs, the base image and the
    /// repository.
    pub key: String,
    pub repo_url: String,
    /// The runner node whose Docker engine keeps the image.
    pub node_id: String,
    pub image: String,
    /// `building`, `ready`, `failed`, or `stale` (rebuilt before its next use).
    pub state: String,
    pub size_bytes: i64,
    pub last_used: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// The setup's output, redacted and bounded; only when one environment is asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// Environments, most recently used first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentList {
    pub environments: Vec<Environment>,
}

/// The query of `GET /v1/environments` and `GET /v1/setup-secrets`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RepositoryQuery {
    /// The repository's clone URL, as tasks name it.
    pub repo_url: String,
}

/// The body of `PUT /v1/setup-secrets`.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PutSetupSecret {
    pub repo_url: String,
    /// The variable the setup sees it as: letters, digits and `_`.
    pub name: String,
    /// Sealed at once; never shown again.
    pub value: String,
}

impl std::fmt::Debug for PutSetupSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutSetupSecret")
            .field("repo_url", &self.repo_url)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The query of `DELETE /v1/setup-secrets`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SetupSecretQuery {
    pub repo_url: String,
    pub name: String,
}

/// The names of the caller's setup secrets for a repository (never their values).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SetupSecretList {
    pub names: Vec<String>,
}
