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

pub use berth_testkit::db::Backend;
use berth_testkit::db::TestDb;
pub use berth_testkit::eventually;

/// A fresh database; `open` may be called again for a second connection (another "node").
pub struct TestStore {
    pub db: TestDb,
}

/// Runner warnings go to the test's output, so a failure says what the runner saw.
fn show_warnings() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_test_writer()
        .try_init();
}

impl TestStore {
    pub async fn new(backend: Backend) -> Self {
        show_warnings();
        Self {
            db: TestDb::new(&backend).await,
        }
    }

    pub async fn open(&self) -> Arc<dyn Store> {
        match &self.db.url {
            None => berth_store::open_sqlite(&self.db.data_dir()).await.unwrap(),
            Some(url) => berth_store::open_url(url).await.unwrap(),
        }
    }
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
        github: None,
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

pub(crate) use berth_testkit::on_both_backends;
