//! Fresh databases for each test, runners in this process, and scripted executors.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use berth_proto::{CreateTask, Task, TaskId, TaskStatus, UserId};
use berth_runner::{Backoff, Context, Executor, Outcome, Runner, RunnerConfig};
use berth_store::{NewTask, Store};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    pub fn postgres() -> Option<Backend> {
        match std::env::var("BERTH_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Some(Backend::Postgres(url)),
            _ if std::env::var_os("CI").is_some() => {
                panic!("BERTH_TEST_DATABASE_URL is not set; run the tests with scripts/test")
            }
            _ => {
                eprintln!(
                    "skipped: BERTH_TEST_DATABASE_URL is not set (scripts/test starts PostgreSQL)"
                );
                None
            }
        }
    }
}

/// A fresh database; `open` may be called again for a second connection (another "node").
pub struct TestDb {
    pub url: Option<String>,
    pub dir: tempfile::TempDir,
}

/// Runner warnings go to the test's output, so a failure says what the runner saw.
fn show_warnings() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_test_writer()
        .try_init();
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        show_warnings();
        let dir = tempfile::tempdir().unwrap();
        let url = match &backend {
            Backend::Sqlite => None,
            Backend::Postgres(admin) => Some(create_database(admin).await),
        };
        Self { url, dir }
    }

    pub async fn open(&self) -> Arc<dyn Store> {
        match &self.url {
            None => berth_store::open_sqlite(self.dir.path()).await.unwrap(),
            Some(url) => berth_store::open_url(url).await.unwrap(),
        }
    }
}

async fn create_database(admin_url: &str) -> String {
    use sqlx::Connection;
    let name = format!("berth_test_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut url = url::Url::parse(admin_url).unwrap();
    url.set_path(&name);
    url.to_string()
}

pub async fn enqueue(
    store: &dyn Store,
    owner: UserId,
    prompt: &str,
    timeout_secs: Option<u64>,
) -> Task {
    let mut request = CreateTask::new("https://github.com/octo/hello", prompt);
    request.timeout_secs = timeout_secs;
    let new = NewTask {
        owner_id: owner,
        request,
        max_attempts: 3,
        idempotency: None,
    };
    store.create_task(new).await.unwrap().task
}

/// Settings for quick tests: short leases and polls.
pub fn quick_config(node: &str) -> RunnerConfig {
    RunnerConfig {
        node_id: node.to_string(),
        capacity: 4,
        per_user_limit: 100,
        lease: Duration::from_secs(5),
        heartbeat: Duration::from_millis(500),
        cancel_poll: Duration::from_millis(100),
        poll: Duration::from_millis(200),
        reap_interval: Duration::from_millis(200),
        drain_grace: Duration::from_millis(300),
        stop_grace: Duration::from_secs(5),
        default_timeout: Duration::from_secs(60),
        backoff: Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(50),
        },
    }
}

/// A runner in this process, stopped (drained) by `stop`.
pub struct RunningRunner {
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<()>,
}

impl RunningRunner {
    pub fn start(config: RunnerConfig, store: Arc<dyn Store>, executor: Arc<dyn Executor>) -> Self {
        let runner = Runner::new(config, store, executor);
        let (shutdown, signal) = oneshot::channel::<()>();
        let handle = tokio::spawn(runner.run(async {
            let _ = signal.await;
        }));
        Self {
            shutdown: Some(shutdown),
            handle,
        }
    }

    pub async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        self.handle.await.unwrap();
    }
}

/// Polls until `check` holds, failing after `limit` (a guard against hangs, not a timing goal).
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn status_of(store: &dyn Store, owner: UserId, id: TaskId) -> TaskStatus {
    store.get_task(owner, id).await.unwrap().unwrap().status
}

/// An executor that runs a closure, and counts how often each task was run.
pub struct Scripted<F> {
    pub script: F,
    pub runs: Mutex<HashMap<TaskId, u32>>,
}

impl<F> Scripted<F> {
    pub fn new(script: F) -> Arc<Self> {
        Arc::new(Self {
            script,
            runs: Mutex::new(HashMap::new()),
        })
    }

    pub fn runs(&self) -> HashMap<TaskId, u32> {
        self.runs.lock().unwrap().clone()
    }
}

#[async_trait]
impl<F, Fut> Executor for Scripted<F>
where
    F: Fn(Task, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    async fn run(&self, task: Task, ctx: Context) -> Outcome {
        *self.runs.lock().unwrap().entry(task.id).or_default() += 1;
        (self.script)(task, ctx).await
    }
}

/// Runs each named test on SQLite and on PostgreSQL.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::harness::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = crate::harness::Backend::postgres() {
                        super::$name(backend).await
                    }
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;
