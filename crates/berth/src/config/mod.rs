//! Berth's configuration, where the parts meet. Each library crate owns the settings of its
//! part; [`Config`] is all of them side by side, plus [`Common`], the binary's own settings and
//! those more than one part reads, which the binary hands to each part that needs them. Keys
//! stay flat (`runner_capacity`, `agent_model`), as docs/configuration.md lists them.

mod layers;
mod operations;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use berth_guard::AllowedHost;
use berth_proto::settings::comma_separated;
use berth_proto::Secret;
use berth_store::{sealing, Store};
use serde::{Deserialize, Serialize};

pub use layers::Overrides;
pub use operations::{LogFormat, Operations};

/// Every setting, one part beside the other. It is read part by part (see `layers`), so it is
/// only serialized, for its defaults and its list of keys.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Config {
    #[serde(flatten)]
    pub common: Common,
    #[serde(flatten)]
    pub server: berth_server::Settings,
    #[serde(flatten)]
    pub runner: berth_runner::Settings,
    #[serde(flatten)]
    pub agent: berth_agent::Settings,
    #[serde(flatten)]
    pub sandbox: berth_sandbox::Settings,
    /// Where sandboxes run: the local Docker engine or Fly Machines.
    #[serde(flatten)]
    pub fly: berth_fly::Settings,
    #[serde(flatten)]
    pub sealing: sealing::Settings,
    #[serde(flatten)]
    pub operations: Operations,
}

/// Where the node listens and keeps its data, and the settings that belong to no one part: the
/// API and the runner check the same git hosts and GitHub host, and who commits and what is
/// masked are the node's concern rather than one executor's.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Common {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Where the SQLite database and other local state live.
    pub data_dir: PathBuf,
    /// `postgres://…` to use PostgreSQL instead of SQLite in `data_dir`.
    pub database_url: Option<Secret>,
    /// Git hosts tasks may name: `host`, `host:port`, or `http://host:port` to allow plain HTTP.
    #[serde(deserialize_with = "comma_separated")]
    pub git_allowed_hosts: Vec<String>,
    /// GitHub's web address (GitHub Enterprise: `https://ghe.example.com`).
    pub github_web_url: String,
    /// GitHub's API address (GitHub Enterprise: `https://ghe.example.com/api/v3`).
    pub github_api_url: String,
    /// A token for pushing and pull requests on the GitHub host when a task's owner has none.
    pub github_token: Option<Secret>,
    /// The GitHub App's id: with its private key, the API answers on GitHub as the App and
    /// the runner clones and pushes GitHub's tasks with its installation tokens.
    pub github_app_id: Option<u64>,
    /// The App's private key: the PEM itself, or the path of the file that holds it.
    pub github_app_private_key: Option<Secret>,
    /// More values to mask in everything stored or streamed.
    pub redact_secrets: Vec<Secret>,
    pub git_author_name: String,
    pub git_author_email: String,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            data_dir: PathBuf::from("berth-data"),
            database_url: None,
            git_allowed_hosts: vec!["github.com".to_string()],
            github_web_url: "https://github.com".to_string(),
            github_api_url: "https://api.github.com".to_string(),
            github_token: None,
            github_app_id: None,
            github_app_private_key: None,
            redact_secrets: Vec::new(),
            git_author_name: "Berth".to_string(),
            git_author_email: "berth@localhost".to_string(),
        }
    }
}

/// Where the tasks are kept.
#[derive(Clone, Debug)]
pub enum Database {
    Sqlite { data_dir: PathBuf },
    Postgres { url: Secret },
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Every key a person may set, in `berth.toml` or as `BERTH_<KEY>`: the fields of the
    /// parts, read off their serialized defaults so that no list is kept by hand.
    pub fn keys() -> Vec<String> {
        let defaults = serde_json::to_value(Config::default()).expect("the defaults serialize");
        let table = defaults.as_object().expect("the configuration is a table");
        table.keys().cloned().collect()
    }

    /// Each part's own checks, then those that span parts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.common
            .validate()
            .and_then(|()| self.server.validate())
            .and_then(|()| self.runner.validate())
            .and_then(|()| self.agent.validate())
            .and_then(|()| self.sandbox.validate())
            .and_then(|()| self.fly.validate())
            .and_then(|()| self.sealing.validate())
            .and_then(|()| self.operations.validate())
            .and_then(|()| self.validate_across_parts())
            .map_err(ConfigError::Invalid)
    }

    fn validate_across_parts(&self) -> Result<(), String> {
        if self.server.github_client_id.is_some() && self.sealing.encryption_key.is_none() {
            return Err(
                "GitHub sign-in is on (github_client_id is set) but encryption_key is not: \
                 users' GitHub tokens must be stored encrypted. Make a key with `openssl rand \
                 -base64 32` and set it as encryption_key (or BERTH_ENCRYPTION_KEY)"
                    .into(),
            );
        }
        if self.server.github_webhook_secret.is_some() && self.common.github_app_id.is_none() {
            return Err(
                "github_webhook_secret is set but github_app_id is not: the webhook answers as \
                 the GitHub App (see docs/github.md)"
                    .into(),
            );
        }
        Ok(())
    }
}

impl Common {
    fn validate(&self) -> Result<(), String> {
        if self.git_allowed_hosts.is_empty() {
            return Err("git_allowed_hosts is empty: tasks could name no repository".into());
        }
        for host in &self.git_allowed_hosts {
            AllowedHost::parse(host)
                .map_err(|message| format!("git_allowed_hosts entry {host:?}: {message}"))?;
        }
        for (name, url) in [
            ("github_web_url", &self.github_web_url),
            ("github_api_url", &self.github_api_url),
        ] {
            if url::Url::parse(url).is_err() {
                return Err(format!("{name} {url:?} is not a URL"));
            }
        }
        match (self.github_app_id, &self.github_app_private_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err("github_app_id and github_app_private_key go together".into())
            }
            (Some(_), Some(_)) => drop(self.github_app()?),
            (None, None) => {}
        }
        self.database().map(drop)
    }

    /// The GitHub App, when it is configured: its key read (from the setting, or from the file
    /// it names) and checked.
    pub fn github_app(&self) -> Result<Option<Arc<berth_github::GitHubApp>>, String> {
        let (Some(app_id), Some(key)) = (self.github_app_id, &self.github_app_private_key) else {
            return Ok(None);
        };
        let key = key.expose();
        let pem = match key.trim_start().starts_with("-----BEGIN") {
            true => key.to_string(),
            false => std::fs::read_to_string(key).map_err(|err| {
                format!("github_app_private_key: cannot read the key file {key:?}: {err}")
            })?,
        };
        let credentials = berth_github::AppCredentials {
            app_id,
            private_key_pem: pem,
        };
        let app = berth_github::GitHubApp::new(&self.github_api_url, &credentials)
            .map_err(|err| format!("github_app_private_key: {err}"))?;
        Ok(Some(Arc::new(app)))
    }

    pub fn database(&self) -> Result<Database, String> {
        match &self.database_url {
            None => Ok(Database::Sqlite {
                data_dir: self.data_dir.clone(),
            }),
            Some(url)
                if url.expose().starts_with("postgres://")
                    || url.expose().starts_with("postgresql://") =>
            {
                Ok(Database::Postgres { url: url.clone() })
            }
            Some(_) => Err(
                "database_url must start with postgres:// or postgresql://; leave \
                            it unset to use SQLite in data_dir"
                    .to_string(),
            ),
        }
    }

    /// The entries of `git_allowed_hosts`, which validation has parsed once already.
    pub fn allowed_hosts(&self) -> Vec<AllowedHost> {
        self.git_allowed_hosts
            .iter()
            .filter_map(|host| AllowedHost::parse(host).ok())
            .collect()
    }
}

/// Opens the store the configuration names, running its migrations.
pub async fn open_store(common: &Common) -> anyhow::Result<Arc<dyn Store>> {
    let store = match common.database().map_err(anyhow::Error::msg)? {
        Database::Sqlite { data_dir } => berth_store::open_sqlite(&data_dir).await,
        Database::Postgres { url } => berth_store::open_url(url.expose()).await,
    };
    Ok(store?)
}
