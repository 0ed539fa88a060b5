//! The runner role: claims tasks from the shared database and runs them on this machine.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use berth_agent::run::Agent;
use berth_runner::attempt::{Lifecycle, LifecycleSettings};
use berth_runner::command::SandboxCommand;
use berth_runner::environment::EnvironmentCache;
use berth_runner::git::{CredentialsFor, GitAccess};
use berth_runner::publish::{Author, GitHub};
use berth_runner::{Executor, NodeIdentity, Runner, RunnerConfig};
use berth_sandbox::Sandboxes;
use berth_store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The runner settings the configuration names, under the node id this runner holds.
pub fn runner_config(config: &Config, node: &NodeIdentity) -> RunnerConfig {
    let settings = &config.runner;
    let lease = Duration::from_secs(settings.runner_lease_secs);
    RunnerConfig {
        node_id: node.id().to_string(),
        capacity: settings.runner_capacity,
        per_user_limit: settings.runner_per_user_limit,
        lease,
        heartbeat: lease / 3,
        drain_grace: Duration::from_secs(settings.runner_drain_grace_secs),
        // The API's setting: tasks that name no timeout get this one.
        default_timeout: Duration::from_secs(config.server.default_timeout_secs),
        ..RunnerConfig::default()
    }
}

/// A runner working in the background until it is told to stop.
pub struct RunningRunner {
    /// Held until the runner has finished: no other runner takes this id meanwhile.
    node: NodeIdentity,
    /// Its warm pool, emptied once the runner has finished.
    pool: Option<Arc<berth_sandbox::WarmPool>>,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl RunningRunner {
    pub fn node_id(&self) -> &str {
        self.node.id()
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
        if let Some(pool) = self.pool {
            pool.shutdown().await;
        }
    }
}

/// The executor tasks run with: the attempt lifecycle, with the agent or the configured fixed
/// command as its work.
async fn executor(
    config: &Config,
    store: Arc<dyn Store>,
    backend: &Backend,
) -> anyhow::Result<Arc<dyn Executor>> {
    let settings = lifecycle_settings(config, store, backend).await?;
    if let Some(command) = &config.runner.runner_command {
        let work = SandboxCommand {
            command: command.clone(),
            timeout: Duration::from_secs(config.server.max_timeout_secs),
        };
        return Ok(Arc::new(Lifecycle { settings, work }));
    }
    let berth = Agent {
        provider: crate::agent::provider(config),
        settings: crate::agent::settings(config),
    };
    let claude_code = match config.runner.agent {
        berth_proto::Agent::ClaudeCode => Some(crate::claude_code::work(config).await?),
        berth_proto::Agent::Berth => None,
    };
    let work = crate::claude_code::ChosenAgent {
        berth,
        claude_code,
        default: config.runner.agent,
    };
    Ok(Arc::new(Lifecycle { settings, work }))
}

/// What every attempt needs, with sandboxes from `backend`.
async fn lifecycle_settings(
    config: &Config,
    store: Arc<dyn Store>,
    backend: &Backend,
) -> anyhow::Result<LifecycleSettings> {
    let git = GitAccess {
        resolve_host: berth_runner::git::checked_against(config.common.allowed_hosts()),
        credentials: github_credentials(config, store)?,
        work_dir: config.common.data_dir.join("work"),
        limits: Default::default(),
    };
    let limits = config.sandbox.limits();
    // Without the proxy (an engine whose gateway is not this host's, or Fly machines) the
    // runner still runs tasks; those asking for `allowlist` fail, saying there is no proxy.
    let egress = match &backend.docker {
        Some(docker) => match berth_runner::egress::start(docker, &config.runner).await {
            Ok(egress) => Some(egress),
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "no egress proxy: tasks with network allowlist will fail");
                None
            }
        },
        None => None,
    };
    // Prepared environment images are made on this machine's engine: not for Fly machines.
    let keyring = config.sealing.keyring().map_err(anyhow::Error::msg)?;
    let environments = match &backend.docker {
        Some(docker) if config.runner.environments => {
            let rules = config.runner.environment_rules();
            let cache = EnvironmentCache::new(docker.clone(), rules).with_keyring(keyring);
            Some(Arc::new(cache))
        }
        _ => None,
    };
    Ok(LifecycleSettings {
        git,
        sandboxes: backend.sandboxes.clone(),
        environments,
        image: backend.image.clone(),
        limits,
        setup_commands: config.agent.setup_commands.clone(),
        setup_timeout: Duration::from_secs(config.agent.agent_command_timeout_secs),
        redactor: crate::agent::redactor(config),
        github: Some(GitHub {
            web_url: config.common.github_web_url.clone(),
            api_url: config.common.github_api_url.clone(),
        }),
        author: Author {
            name: config.common.git_author_name.clone(),
            email: config.common.git_author_email.clone(),
        },
        egress,
    })
}

/// Where this runner's sandboxes come from.
struct Backend {
    sandboxes: Arc<dyn Sandboxes>,
    /// The image attempts start from.
    image: String,
    /// The engine, when sandboxes are its containers: the egress proxy needs it.
    docker: Option<berth_sandbox::Docker>,
    /// Started containers waiting for tasks, emptied once the runner has finished.
    pool: Option<Arc<berth_sandbox::WarmPool>>,
}

/// The configured backend: this machine's Docker engine (with a warm pool if one is asked
/// for), or Fly Machines.
async fn backend(
    config: &Config,
    store: &dyn Store,
    node: &NodeIdentity,
) -> anyhow::Result<Backend> {
    if config.fly.sandbox_backend == berth_fly::Backend::Fly {
        return fly_backend(config);
    }
    let docker = berth_sandbox::connect()
        .await
        .context("the runner needs the Docker engine (or sandbox_backend = \"fly\")")?;
    // The Claude Code image is the default image with the CLI added: Berth's own agent works
    // in it too, so tasks may pick either.
    let image = match config.runner.agent {
        berth_proto::Agent::ClaudeCode => crate::claude_code::image(config).await?,
        berth_proto::Agent::Berth => sandbox_image(config, &docker).await?,
    };
    let pool = warm_pool(config, store, node, &docker, &image).await?;
    let sandboxes: Arc<dyn Sandboxes> = match &pool {
        Some(pool) => pool.clone(),
        None => Arc::new(berth_sandbox::DockerSandboxes::new(docker.clone())),
    };
    Ok(Backend {
        sandboxes,
        image,
        docker: Some(docker),
        pool,
    })
}

/// Machines of the configured Fly app, booting `fly_image` (else `sandbox_image` as named):
/// Fly pulls it, so nothing is checked or built here.
fn fly_backend(config: &Config) -> anyhow::Result<Backend> {
    if config.runner.agent == berth_proto::Agent::ClaudeCode {
        anyhow::bail!(
            "agent = \"claude-code\" needs sandbox_backend = \"docker\": its model proxy listens \
             on the Docker sandbox network"
        );
    }
    let sandboxes =
        berth_fly::FlySandboxes::from_settings(&config.fly).map_err(anyhow::Error::msg)?;
    let image = (config.fly.fly_image.clone())
        .or_else(|| config.sandbox.sandbox_image.clone())
        .unwrap_or_else(berth_sandbox::default_image);
    tracing::info!(app = config.fly.fly_app.as_deref().unwrap_or_default(), %image, "sandboxes are Fly Machines");
    Ok(Backend {
        sandboxes: Arc::new(sandboxes),
        image,
        docker: None,
        pool: None,
    })
}

/// The configured sandbox image, checked; or the default one, built if it is missing.
async fn sandbox_image(config: &Config, docker: &berth_sandbox::Docker) -> anyhow::Result<String> {
    Ok(match &config.sandbox.sandbox_image {
        Some(image) => {
            berth_sandbox::check_image(docker, image).await?;
            image.clone()
        }
        None => {
            // Through the logger, so that JSON logs stay JSON.
            let mut progress = |line: &str| tracing::info!(progress = line, "sandbox image");
            berth_sandbox::ensure_default_image(docker, &mut progress).await?;
            berth_sandbox::default_image()
        }
    })
}

/// The runner's warm pool of the configured image, when `warm_pool_size` asks for one.
async fn warm_pool(
    config: &Config,
    store: &dyn Store,
    node: &NodeIdentity,
    docker: &berth_sandbox::Docker,
    image: &str,
) -> anyhow::Result<Option<Arc<berth_sandbox::WarmPool>>> {
    if config.sandbox.warm_pool_size == 0 {
        return Ok(None);
    }
    let pool = berth_sandbox::WarmPool::start(
        docker.clone(),
        store.installation_id(),
        node.id(),
        config.sandbox.pool(),
        &[image.to_string()],
    )
    .await
    .context("starting the warm pool")?;
    Ok(Some(Arc::new(pool)))
}

/// The token for repositories on the GitHub host: for a task started from GitHub, the App's
/// installation token for that one repository; else the owner's own, opened with the
/// configured key, or else the server's `github_token`; nothing for other hosts.
fn github_credentials(config: &Config, store: Arc<dyn Store>) -> anyhow::Result<CredentialsFor> {
    let keyring = config.sealing.keyring().map_err(anyhow::Error::msg)?;
    let app = config.common.github_app().map_err(anyhow::Error::msg)?;
    let github = url::Url::parse(&config.common.github_web_url)
        .ok()
        .map(|url| url.origin());
    let server_token = config
        .common
        .github_token
        .as_ref()
        .map(|token| token.expose().to_string());
    Ok(Arc::new(move |owner, task_id, repo_url: String| {
        let (keyring, github, store) = (keyring.clone(), github.clone(), store.clone());
        let (server_token, app) = (server_token.clone(), app.clone());
        Box::pin(async move {
            let same_host = url::Url::parse(&repo_url).ok().map(|url| url.origin()) == github;
            if !same_host || github.is_none() {
                return None;
            }
            if let (Some(app), Ok(Some(link))) = (&app, store.github_link(task_id).await) {
                let token = app
                    .installation_token(link.installation_id as u64, &link.repository)
                    .await;
                return token
                    .inspect_err(|err| tracing::warn!(task = %task_id, error = %err, "no installation token"))
                    .ok();
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
    let configured = config.runner.runner_node_id.as_deref();
    let node =
        NodeIdentity::acquire(&config.common.data_dir, configured).map_err(anyhow::Error::msg)?;
    let backend = backend(config, store.as_ref(), &node).await?;
    let executor = match executor(config, store.clone(), &backend).await {
        Ok(executor) => executor,
        Err(err) => {
            if let Some(pool) = &backend.pool {
                pool.shutdown().await;
            }
            return Err(err);
        }
    };
    let pool = backend.pool;
    let runner = Runner::new(runner_config(config, &node), store, executor);
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let handle = tokio::spawn(runner.run(async move { signal.cancelled().await }));
    Ok(RunningRunner {
        node,
        pool,
        stop,
        handle,
    })
}
