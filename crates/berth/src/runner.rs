//! The runner role: claims tasks from the shared database and runs them on this machine.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use berth_agent::run::AgentExecutor;
use berth_runner::command::SandboxCommand;
use berth_runner::git::{CredentialsFor, GitAccess, ResolveHost};
use berth_runner::{Executor, Runner, RunnerConfig};
use berth_sandbox::Limits;
use berth_server::Config;
use berth_store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The runner settings the configuration names.
pub fn runner_config(config: &Config) -> RunnerConfig {
    let lease = Duration::from_secs(config.runner_lease_secs);
    RunnerConfig {
        node_id: config
            .runner_node_id
            .clone()
            .unwrap_or_else(berth_runner::default_node_id),
        capacity: config.runner_capacity,
        per_user_limit: config.runner_per_user_limit,
        lease,
        heartbeat: lease / 3,
        drain_grace: Duration::from_secs(config.runner_drain_grace_secs),
        default_timeout: Duration::from_secs(config.default_timeout_secs),
        ..RunnerConfig::default()
    }
}

/// A runner working in the background until it is told to stop.
pub struct RunningRunner {
    node_id: String,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl RunningRunner {
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Cancelling it starts the drain.
    pub fn stop_handle(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Waits for the drain to end.
    pub async fn finish(self) {
        if let Err(err) = self.handle.await {
            tracing::error!(error = %err, "the runner crashed");
        }
    }
}

/// The executor tasks run with: the agent, or the configured fixed command, in a sandbox of
/// the configured image, which is checked (or, for the default image, built) first.
async fn executor(config: &Config, store: Arc<dyn Store>) -> anyhow::Result<Arc<dyn Executor>> {
    let docker = berth_sandbox::connect()
        .await
        .context("the runner needs the Docker engine")?;
    let image = match &config.sandbox_image {
        Some(image) => {
            berth_sandbox::check_image(&docker, image).await?;
            image.clone()
        }
        None => {
            let mut progress = |line: &str| eprintln!("berth image: {line}");
            berth_sandbox::ensure_default_image(&docker, &mut progress).await?;
            berth_sandbox::default_image()
        }
    };
    let allowed = config.allowed_hosts();
    let resolve_host: ResolveHost = Arc::new(move |url: String| {
        let allowed = allowed.clone();
        Box::pin(async move { berth_server::accounts::resolve_repo_host(&url, &allowed).await })
    });
    let git = GitAccess {
        resolve_host,
        credentials: github_credentials(config, store)?,
        work_dir: config.data_dir.join("work"),
    };
    let limits = Limits {
        memory_bytes: config.sandbox_memory_mb << 20,
        cpus: config.sandbox_cpus,
        pids: config.sandbox_pids,
    };
    if let Some(command) = &config.runner_command {
        return Ok(Arc::new(SandboxCommand {
            git,
            docker,
            image,
            limits,
            command: command.clone(),
            command_timeout: Duration::from_secs(config.max_timeout_secs),
        }));
    }
    Ok(Arc::new(AgentExecutor {
        provider: crate::agent::provider(config),
        settings: crate::agent::settings(config),
        git,
        docker,
        image,
        limits,
    }))
}

/// The token for repositories on the GitHub host: the owner's own, opened with the configured
/// key, or else the server's `github_token`; nothing for other hosts.
fn github_credentials(config: &Config, store: Arc<dyn Store>) -> anyhow::Result<CredentialsFor> {
    let keyring =
        berth_server::accounts::Keyring::from_config(config).map_err(anyhow::Error::msg)?;
    let github = url::Url::parse(&config.github_web_url)
        .ok()
        .map(|url| url.origin());
    let server_token = config
        .github_token
        .as_ref()
        .map(|token| token.expose().to_string());
    Ok(Arc::new(move |owner, repo_url: String| {
        let (keyring, github, store) = (keyring.clone(), github.clone(), store.clone());
        let server_token = server_token.clone();
        Box::pin(async move {
            let same_host = url::Url::parse(&repo_url).ok().map(|url| url.origin()) == github;
            if !same_host || github.is_none() {
                return None;
            }
            let own = match (keyring, store.get_github_token(owner).await) {
                (Some(keyring), Ok(Some(sealed))) => keyring.open(&sealed).ok(),
                _ => None,
            };
            own.or(server_token)
        })
    }))
}

/// Starts this node's runner over `store`.
pub async fn start(config: &Config, store: Arc<dyn Store>) -> anyhow::Result<RunningRunner> {
    let executor = executor(config, store.clone()).await?;
    let runner_config = runner_config(config);
    let node_id = runner_config.node_id.clone();
    let runner = Runner::new(runner_config, store, executor);
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let handle = tokio::spawn(runner.run(async move { signal.cancelled().await }));
    Ok(RunningRunner {
        node_id,
        stop,
        handle,
    })
}
