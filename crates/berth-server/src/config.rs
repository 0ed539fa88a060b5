//! Server configuration, in layers: defaults, then `berth.toml`, then `BERTH_*` environment
//! variables, then command-line flags; then validation with messages a person can act on.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize};

use crate::repo_url::AllowedHost;

/// The API the agent talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentProvider {
    Anthropic,
    Openai,
}

/// A value that must never be printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Where the SQLite database and other local state live.
    pub data_dir: PathBuf,
    /// `postgres://…` to use PostgreSQL instead of SQLite in `data_dir`.
    pub database_url: Option<Secret>,
    /// Git hosts tasks may name: `host`, `host:port`, or `http://host:port` to allow plain HTTP.
    #[serde(deserialize_with = "comma_separated")]
    pub git_allowed_hosts: Vec<String>,
    /// Largest prompt accepted, in bytes.
    pub max_prompt_bytes: usize,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Longest a task may run when it does not say, in seconds.
    pub default_timeout_secs: u64,
    /// Longest a task may ask to run, in seconds.
    pub max_timeout_secs: u64,
    /// How many times a task is attempted before it fails for good.
    pub max_attempts: i64,
    /// Names this node's runner in leases and container labels (default: `hostname-pid`).
    pub runner_node_id: Option<String>,
    /// Most tasks this node's runner runs at once.
    pub runner_capacity: usize,
    /// Most tasks one user has running at once, across all runners.
    pub runner_per_user_limit: i64,
    /// How long a runner's claim lasts without a heartbeat, in seconds.
    pub runner_lease_secs: u64,
    /// On shutdown, how long running tasks may go on before they are handed back, in seconds.
    pub runner_drain_grace_secs: u64,
    /// A fixed command to run in each task's sandbox instead of the agent (batch jobs, tests).
    pub runner_command: Option<String>,
    /// `anthropic` (the Messages API) or `openai` (any OpenAI-compatible chat API).
    pub agent_provider: AgentProvider,
    /// The model of tasks that name none.
    pub agent_model: String,
    /// Turns one request may take unless its task's budget says otherwise.
    pub agent_max_turns: u32,
    /// Most tokens the model may write in one turn.
    pub agent_max_output_tokens: u32,
    /// Longest one command of the agent may run.
    pub agent_command_timeout_secs: u64,
    /// The model's context window in tokens: past three quarters of it, the oldest tool
    /// results are left out of requests. Set it for local models with smaller windows.
    pub agent_context_tokens: u64,
    /// Also read from `ANTHROPIC_API_KEY`.
    pub anthropic_api_key: Option<Secret>,
    /// Also read from `ANTHROPIC_BASE_URL`.
    pub anthropic_base_url: String,
    pub anthropic_version: String,
    /// Such as `http://127.0.0.1:8080/v1` for a llama.cpp server.
    pub openai_base_url: String,
    pub openai_api_key: Option<Secret>,
    /// Commands run in the sandbox before the agent starts, by repository URL prefix.
    pub setup_commands: BTreeMap<String, String>,
    /// Prices per million tokens by model name prefix, added to the built-in table.
    pub prices: BTreeMap<String, berth_agent::prices::Price>,
    /// More values to mask in everything stored or streamed.
    pub redact_secrets: Vec<Secret>,
    /// A token for pushing and pull requests on the GitHub host when a task's owner has none.
    pub github_token: Option<Secret>,
    pub git_author_name: String,
    pub git_author_email: String,
    /// The sandbox image; the default is built on this machine by `berth image build`.
    pub sandbox_image: Option<String>,
    /// Memory of one sandbox, in MiB (no swap on top).
    pub sandbox_memory_mb: u64,
    /// CPUs of one sandbox.
    pub sandbox_cpus: f64,
    /// Most processes in one sandbox.
    pub sandbox_pids: i64,
    /// Frames queued for one stream connection; a client further behind is disconnected
    /// with the "resume" close code.
    pub stream_buffer_frames: usize,
    /// Seconds between WebSocket pings; a connection with no pong for 10 s more is dropped.
    pub stream_ping_secs: u64,
    /// Seconds a stream ticket (for browsers) stays valid.
    pub stream_ticket_ttl_secs: u64,
    /// Seconds a stream may stay stalled (its queue full) before the client is disconnected
    /// with the "resume" close code.
    pub stream_stall_secs: u64,
    /// GitHub OAuth app's client id; setting it turns GitHub sign-in on.
    pub github_client_id: Option<String>,
    /// GitHub OAuth app's client secret (the web flow needs it; the device flow does not).
    pub github_client_secret: Option<Secret>,
    /// GitHub's web address (GitHub Enterprise: `https://ghe.example.com`).
    pub github_web_url: String,
    /// GitHub's API address (GitHub Enterprise: `https://ghe.example.com/api/v3`).
    pub github_api_url: String,
    /// The address people reach this server at, e.g. `https://berth.example.com`; the OAuth
    /// callback is `<public_url>/v1/auth/github/callback`, and `https` makes cookies `Secure`.
    pub public_url: Option<String>,
    /// 32 random bytes, base64, sealing users' GitHub tokens (`openssl rand -base64 32`).
    pub encryption_key: Option<Secret>,
    /// Names `encryption_key`; stored beside each sealed token.
    pub encryption_key_id: String,
    /// Older keys still able to open tokens until `berth keys rotate` re-seals them:
    /// `id:base64,id:base64`.
    pub encryption_old_keys: Option<Secret>,
    /// GitHub logins that may sign in; with `allowed_orgs`, empty means everyone.
    #[serde(deserialize_with = "comma_separated")]
    pub allowed_logins: Vec<String>,
    /// GitHub organisations whose members may sign in.
    #[serde(deserialize_with = "comma_separated")]
    pub allowed_orgs: Vec<String>,
    /// Whether the first user to sign in becomes admin.
    pub first_user_admin: bool,
    /// How long a browser session lasts, in seconds.
    pub session_ttl_secs: u64,
    /// Tasks one user may create in a burst, and how many more per minute after it.
    pub rate_limit_task_burst: u32,
    pub rate_limit_tasks_per_minute: u32,
    /// Sign-in attempts one user (or address) may make in a burst, and per minute after it.
    pub rate_limit_sign_in_burst: u32,
    pub rate_limit_sign_ins_per_minute: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            data_dir: PathBuf::from("berth-data"),
            database_url: None,
            git_allowed_hosts: vec!["github.com".to_string()],
            max_prompt_bytes: 64 * 1024,
            max_body_bytes: 1024 * 1024,
            default_timeout_secs: 30 * 60,
            max_timeout_secs: 4 * 60 * 60,
            max_attempts: 3,
            runner_node_id: None,
            runner_capacity: 2,
            runner_per_user_limit: 2,
            runner_lease_secs: 30,
            runner_drain_grace_secs: 30,
            runner_command: None,
            agent_provider: AgentProvider::Anthropic,
            agent_model: "claude-sonnet-4-5".to_string(),
            agent_max_turns: 100,
            agent_max_output_tokens: 16_000,
            agent_command_timeout_secs: 600,
            agent_context_tokens: 200_000,
            anthropic_api_key: None,
            anthropic_base_url: berth_agent::anthropic::DEFAULT_BASE_URL.to_string(),
            anthropic_version: berth_agent::anthropic::DEFAULT_VERSION.to_string(),
            openai_base_url: "http://127.0.0.1:8080/v1".to_string(),
            openai_api_key: None,
            setup_commands: BTreeMap::new(),
            prices: BTreeMap::new(),
            redact_secrets: Vec::new(),
            github_token: None,
            git_author_name: "Berth".to_string(),
            git_author_email: "berth@localhost".to_string(),
            sandbox_image: None,
            sandbox_memory_mb: 2048,
            sandbox_cpus: 1.0,
            sandbox_pids: 512,
            stream_buffer_frames: 1024,
            stream_ping_secs: 25,
            stream_ticket_ttl_secs: 60,
            stream_stall_secs: 10,
            github_client_id: None,
            github_client_secret: None,
            github_web_url: "https://github.com".to_string(),
            github_api_url: "https://api.github.com".to_string(),
            public_url: None,
            encryption_key: None,
            encryption_key_id: "k1".to_string(),
            encryption_old_keys: None,
            allowed_logins: Vec::new(),
            allowed_orgs: Vec::new(),
            first_user_admin: true,
            session_ttl_secs: 7 * 24 * 3600,
            rate_limit_task_burst: 60,
            rate_limit_tasks_per_minute: 30,
            rate_limit_sign_in_burst: 10,
            rate_limit_sign_ins_per_minute: 5,
        }
    }
}

/// The keys `BERTH_*` environment variables may set; others (such as `BERTH_CONFIG`) are not
/// configuration values.
const ENV_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database_url",
    "git_allowed_hosts",
    "max_prompt_bytes",
    "max_body_bytes",
    "default_timeout_secs",
    "max_timeout_secs",
    "max_attempts",
    "runner_node_id",
    "runner_capacity",
    "runner_per_user_limit",
    "runner_lease_secs",
    "runner_drain_grace_secs",
    "runner_command",
    "agent_provider",
    "agent_model",
    "agent_max_turns",
    "agent_max_output_tokens",
    "agent_command_timeout_secs",
    "agent_context_tokens",
    "anthropic_api_key",
    "anthropic_base_url",
    "anthropic_version",
    "openai_base_url",
    "openai_api_key",
    "setup_commands",
    "prices",
    "redact_secrets",
    "github_token",
    "git_author_name",
    "git_author_email",
    "sandbox_image",
    "sandbox_memory_mb",
    "sandbox_cpus",
    "sandbox_pids",
    "stream_buffer_frames",
    "stream_ping_secs",
    "stream_ticket_ttl_secs",
    "stream_stall_secs",
    "github_client_id",
    "github_client_secret",
    "github_web_url",
    "github_api_url",
    "public_url",
    "encryption_key",
    "encryption_key_id",
    "encryption_old_keys",
    "allowed_logins",
    "allowed_orgs",
    "first_user_admin",
    "session_ttl_secs",
    "rate_limit_task_burst",
    "rate_limit_tasks_per_minute",
    "rate_limit_sign_in_burst",
    "rate_limit_sign_ins_per_minute",
];

/// Values given on the command line; they win over every other layer.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<Secret>,
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
    /// Reads every layer. `file` is the `--config` path; without it `./berth.toml` is read
    /// when it exists.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        // The Anthropic SDKs' own variables, below Berth's file and BERTH_* variables.
        let anthropic = Env::raw().only(&["ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"]);
        let mut figment = Figment::from(Serialized::defaults(Config::default())).merge(anthropic);
        match file {
            Some(path) if !path.exists() => {
                return Err(ConfigError::File {
                    path: path.to_owned(),
                    message: "no such file".to_string(),
                })
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new("berth.toml").exists() => {
                figment = figment.merge(Toml::file_exact("berth.toml"))
            }
            None => {}
        }
        let config: Config = figment
            .merge(Env::prefixed("BERTH_").only(ENV_KEYS))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|err| ConfigError::Invalid(err.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if self.git_allowed_hosts.is_empty() {
            return invalid("git_allowed_hosts is empty: tasks could name no repository".into());
        }
        for host in &self.git_allowed_hosts {
            if let Err(message) = AllowedHost::parse(host) {
                return invalid(format!("git_allowed_hosts entry {host:?}: {message}"));
            }
        }
        if self.max_prompt_bytes == 0 || self.max_prompt_bytes >= self.max_body_bytes {
            return invalid(format!(
                "max_prompt_bytes ({}) must be above 0 and below max_body_bytes ({})",
                self.max_prompt_bytes, self.max_body_bytes
            ));
        }
        if self.default_timeout_secs == 0 || self.default_timeout_secs > self.max_timeout_secs {
            return invalid(format!(
                "default_timeout_secs ({}) must be above 0 and at most max_timeout_secs ({})",
                self.default_timeout_secs, self.max_timeout_secs
            ));
        }
        if self.max_attempts < 1 {
            return invalid("max_attempts must be at least 1".into());
        }
        if self.runner_capacity == 0 || self.runner_per_user_limit < 1 {
            return invalid("runner_capacity and runner_per_user_limit must be at least 1".into());
        }
        if self.runner_lease_secs < 3 {
            return invalid(
                "runner_lease_secs must be at least 3 (heartbeats come every third)".into(),
            );
        }
        if self.sandbox_memory_mb < 64
            || !self.sandbox_cpus.is_finite()
            || self.sandbox_cpus <= 0.0
            || self.sandbox_pids < 16
        {
            return invalid(
                "sandbox limits too small: sandbox_memory_mb >= 64, sandbox_cpus > 0, \
                 sandbox_pids >= 16"
                    .into(),
            );
        }
        if self.stream_buffer_frames < 8
            || self.stream_ping_secs == 0
            || self.stream_ticket_ttl_secs == 0
        {
            return invalid(
                "stream_buffer_frames must be at least 8, stream_ping_secs and \
                 stream_ticket_ttl_secs above 0"
                    .into(),
            );
        }
        if self
            .runner_command
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            return invalid("runner_command is empty; leave it out to run the agent".into());
        }
        if self.agent_max_turns == 0
            || self.agent_max_output_tokens == 0
            || self.agent_command_timeout_secs == 0
        {
            return invalid(
                "agent_max_turns, agent_max_output_tokens and agent_command_timeout_secs must be above 0"
                    .into(),
            );
        }
        if self.agent_context_tokens < 4_096 {
            return invalid(format!(
                "agent_context_tokens is {}; a model needs a context window of at least 4096 tokens",
                self.agent_context_tokens
            ));
        }
        for (name, url) in [
            ("anthropic_base_url", &self.anthropic_base_url),
            ("openai_base_url", &self.openai_base_url),
        ] {
            if !matches!(url::Url::parse(url), Ok(u) if u.scheme() == "http" || u.scheme() == "https")
            {
                return invalid(format!("{name} {url:?} is not an http(s) URL"));
            }
        }
        if let Some(node) = &self.runner_node_id {
            let ok = !node.is_empty()
                && node.len() <= 64
                && node
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                return invalid(format!(
                    "runner_node_id {node:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
                ));
            }
        }
        crate::accounts::validate_config(self).map_err(ConfigError::Invalid)?;
        self.database()?;
        Ok(())
    }

    pub fn database(&self) -> Result<Database, ConfigError> {
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
            Some(_) => Err(ConfigError::Invalid(
                "database_url must start with postgres:// or postgresql://; leave it unset to \
                 use SQLite in data_dir"
                    .to_string(),
            )),
        }
    }

    pub fn allowed_hosts(&self) -> Vec<AllowedHost> {
        self.git_allowed_hosts
            .iter()
            .filter_map(|host| AllowedHost::parse(host).ok())
            .collect()
    }
}

/// Accepts a list, or one string of comma-separated items as an environment variable gives.
fn comma_separated<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(text) => text.split(',').map(str::to_string).collect(),
        OneOrMany::Many(items) => items,
    };
    Ok(items
        .into_iter()
        .map(|item| item.trim().to_string())
        .filter(|item| !item.is_empty())
        .collect())
}

/// Opens the store the configuration names, running its migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<std::sync::Arc<dyn berth_store::Store>> {
    let store = match config.database()? {
        Database::Sqlite { data_dir } => berth_store::open_sqlite(&data_dir).await,
        Database::Postgres { url } => berth_store::open_url(url.expose()).await,
    };
    Ok(store?)
}
