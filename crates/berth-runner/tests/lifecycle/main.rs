//! The attempt lifecycle on the real Docker engine, with work phases of the test's own: what
//! every executor gets whatever its work does — its work so far kept when it fails, its
//! container removed even when it panics, its reasons redacted wherever they are shown, and
//! the host's memory and disk kept within bounds whatever the repository or the work holds.

mod bounds;
mod egress;
mod environments;
mod fly;
mod hosts;
mod phases;
mod pool;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::{CreateTask, Event, Network, Task};
use berth_runner::attempt::{EgressSettings, Lifecycle, LifecycleSettings, Work};
use berth_runner::git::{GitAccess, RepositoryLimits};
use berth_runner::publish::Author;
use berth_runner::redact::Redactor;
use berth_runner::{Runner, RunnerConfig};
use berth_sandbox::{Limits, Sandboxes};
use berth_store::NewTask;
use berth_testkit::eventually;
use berth_testkit::git_server::GitServer;

const SECRET: &str = "server-secret-4242";

/// A token the server holds for a repository's host: it never leaves that host.
pub const TOKEN: &str = "gho_owners-token-7733";

/// Succeeds at once: for tasks whose clone and copy-in are what is tested.
pub struct Nothing;

#[async_trait::async_trait]
impl Work for Nothing {
    async fn run(&self, _job: berth_runner::attempt::Job<'_>) -> berth_runner::attempt::Ending {
        berth_runner::attempt::Ending::Done {
            summary: String::new(),
        }
    }
}

/// Where the task's repository comes from.
pub enum Repo {
    /// A fresh repository on a git server of the test's own, its files made by the closure.
    Made(Box<dyn FnOnce(&std::path::Path) + Send>),
    /// A URL and the address its host resolves to.
    At(String, SocketAddr),
}

/// One task through the lifecycle: its repository, the host's bounds and how often it may be
/// attempted.
pub struct Setup {
    pub repo: Repo,
    /// The token the server holds for the repository's host.
    pub token: Option<String>,
    pub limits: RepositoryLimits,
    pub max_attempts: i64,
    /// Where sandboxes come from; the local Docker engine (or its warm pool) when `None`.
    pub sandboxes: Option<Arc<dyn Sandboxes>>,
    /// The task's network, and the egress proxy for `allowlist`.
    pub network: Network,
    pub egress: Option<EgressSettings>,
    /// Sandboxes come from a warm pool of this many, filled before the task is submitted,
    /// and shut down after (0: each started cold).
    pub warm_pool: usize,
    /// The setup command, for every repository.
    pub setup_command: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            repo: Repo::Made(Box::new(|dir| {
                std::fs::write(dir.join("README"), "hello\n").unwrap()
            })),
            token: None,
            limits: RepositoryLimits::default(),
            max_attempts: 3,
            sandboxes: None,
            network: Network::None,
            egress: None,
            warm_pool: 0,
            setup_command: None,
        }
    }
}

/// Runs one task of a fresh repository through the lifecycle with `work`, to its end.
async fn run_to_end(work: impl Work, max_attempts: i64) -> (Task, Vec<Event>) {
    let setup = Setup {
        max_attempts,
        ..Setup::default()
    };
    run_with(work, setup).await
}

/// Runs one task through the lifecycle with `work`, as `setup` says, to its end.
async fn run_with(work: impl Work, setup: Setup) -> (Task, Vec<Event>) {
    let (task, events, _) = run_keeping_diff(work, setup).await;
    (task, events)
}

/// Like [`run_with`], and also the diff the task kept.
async fn run_keeping_diff(work: impl Work, setup: Setup) -> (Task, Vec<Event>, Option<Vec<u8>>) {
    let git = GitServer::start().await;
    let (repo_url, address) = match setup.repo {
        Repo::Made(fill) => {
            let url = git.create_repo_with("acme/tool", fill);
            (
                url,
                git.url().trim_start_matches("http://").parse().unwrap(),
            )
        }
        Repo::At(url, address) => (url, address),
    };
    let max_attempts = setup.max_attempts;
    let dir = tempfile::tempdir().unwrap();
    let store = berth_store::open_sqlite(dir.path()).await.unwrap();
    let node_id = format!("lifecycle-{}", uuid::Uuid::now_v7().simple());
    let docker = berth_sandbox::connect().await.expect("the Docker engine");
    let pool = match setup.warm_pool {
        0 => None,
        size => Some(Arc::new(
            warm_pool(&docker, store.installation_id(), &node_id, size).await,
        )),
    };
    let sandboxes: Arc<dyn berth_sandbox::Sandboxes> = match (setup.sandboxes, &pool) {
        (Some(sandboxes), _) => sandboxes,
        (None, Some(pool)) => pool.clone(),
        (None, None) => Arc::new(berth_sandbox::DockerSandboxes::new(docker)),
    };
    let settings = LifecycleSettings {
        git: GitAccess {
            resolve_host: Arc::new(move |_| Box::pin(async move { Ok(vec![address]) })),
            credentials: Arc::new(move |_, _, _| {
                let token = setup.token.clone();
                Box::pin(async move { token })
            }),
            work_dir: dir.path().join("work"),
            limits: setup.limits,
        },
        sandboxes,
        image: berth_sandbox::default_image(),
        limits: Limits::default(),
        setup_commands: setup
            .setup_command
            .iter()
            .map(|command| (String::new(), command.clone()))
            .collect(),
        setup_timeout: Duration::from_secs(60),
        environments: None,
        redactor: Redactor::new([SECRET]),
        github: None,
        author: Author::default(),
        egress: setup.egress,
    };
    let config = RunnerConfig {
        node_id,
        poll: Duration::from_millis(100),
        // No sweep after the first: a container that is gone was removed by its attempt.
        reap_interval: Duration::from_secs(3600),
        ..RunnerConfig::default()
    };
    let runner = Runner::new(
        config,
        store.clone(),
        Arc::new(Lifecycle { settings, work }),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(runner.run(stop.clone().cancelled_owned()));

    let owner = store.upsert_user("alice").await.unwrap().id;
    let new = NewTask {
        owner_id: owner,
        request: CreateTask {
            network: Some(setup.network),
            ..CreateTask::new(&repo_url, "work")
        },
        max_attempts,
        idempotency: None,
        github: None,
    };
    let id = store.create_task(new).await.unwrap().task.id;
    let ended = || async {
        let task = store.get_task(owner, id).await.unwrap().unwrap();
        task.status.is_terminal()
    };
    eventually(Duration::from_secs(120), "the task ends", ended).await;
    let task = store.get_task(owner, id).await.unwrap().unwrap();
    let (events, _) = store
        .list_events(owner, id, 0, 1000)
        .await
        .unwrap()
        .unwrap();
    let diff = store.get_diff(owner, id).await.unwrap();
    stop.cancel();
    running.await.unwrap();
    if let Some(pool) = pool {
        pool.shutdown().await;
    }
    (task, events, diff)
}

/// A warm pool of `size` containers of the default image with the default limits, full.
async fn warm_pool(
    docker: &bollard::Docker,
    installation: &str,
    node_id: &str,
    size: usize,
) -> berth_sandbox::WarmPool {
    let budget = size as u64 * Limits::default().memory_bytes;
    let settings = berth_sandbox::PoolSettings::new(size, Limits::default(), Some(budget));
    let image = berth_sandbox::default_image();
    let pool =
        berth_sandbox::WarmPool::start(docker.clone(), installation, node_id, settings, &[image])
            .await
            .unwrap();
    let full = || async { pool.idle() == size };
    eventually(Duration::from_secs(120), "the pool fills", full).await;
    pool
}
