//! A fresh database per test, opened as often as a test needs (another "node"), and short
//! ways to make users and tasks and to claim them.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::{CreateTask, Event, Task, TaskId, TaskStatus, UserId};
use berth_store::{ClaimLimits, Fence, NewTask, Store, TaskEnd};

pub use berth_testkit::db::{Backend, TestDb};
pub use berth_testkit::on_both_backends;

/// A test's own database.
pub struct Db {
    db: TestDb,
}

impl Db {
    pub async fn new(backend: Backend) -> Self {
        Self {
            db: TestDb::new(&backend).await,
        }
    }

    pub fn url(&self) -> Option<String> {
        self.db.url.clone()
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.db.data_dir()
    }

    /// A store on the database; each call is a new store, as another process would open.
    pub async fn open(&self) -> Arc<dyn Store> {
        match &self.db.url {
            None => berth_store::open_sqlite(&self.db.data_dir()).await.unwrap(),
            Some(url) => berth_store::open_url(url).await.unwrap(),
        }
    }

    /// Records a migration this binary does not have, as a newer Berth would.
    pub async fn migrate_from_the_future(&self, version: i64) {
        use sqlx::Connection;
        let insert = "INSERT INTO _sqlx_migrations \
                      (version, description, success, checksum, execution_time) \
                      VALUES ($1, 'from the future', TRUE, $2, 0)";
        let checksum = vec![0u8];
        match &self.db.url {
            None => {
                let path = self.db.data_dir().join("berth.db");
                let url = format!("sqlite://{}", path.display());
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                let query = sqlx::query(insert).bind(version).bind(checksum);
                query.execute(&mut conn).await.unwrap();
            }
            Some(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                let query = sqlx::query(insert).bind(version).bind(checksum);
                query.execute(&mut conn).await.unwrap();
            }
        }
    }

    /// `n` stores standing for separate machines: on PostgreSQL each has its own pool; on
    /// SQLite they are the same store, as a machine's runners share its one writer.
    pub async fn machines(&self, n: usize) -> Vec<Arc<dyn Store>> {
        let first = self.open().await;
        let mut stores = vec![first.clone()];
        for _ in 1..n {
            stores.push(match self.db.url {
                Some(_) => self.open().await,
                None => first.clone(),
            });
        }
        stores
    }
}

pub async fn user(store: &dyn Store, name: &str) -> UserId {
    store.upsert_user(name).await.unwrap().id
}

pub fn new_task(owner: UserId, prompt: &str) -> NewTask {
    NewTask {
        owner_id: owner,
        request: CreateTask::new("https://github.com/octo/hello", prompt),
        max_attempts: 3,
        idempotency: None,
        github: None,
    }
}

pub async fn enqueue(store: &dyn Store, owner: UserId, prompt: &str) -> Task {
    store
        .create_task(new_task(owner, prompt))
        .await
        .unwrap()
        .task
}

/// How an attempt ended, with nothing to keep.
pub fn ended(status: TaskStatus) -> TaskEnd {
    TaskEnd {
        status,
        reason: None,
        diff: None,
        branch: None,
        pull_request_url: None,
    }
}

/// Limits that never stop a claim: a long lease and room for everything.
pub fn roomy(node: &str) -> ClaimLimits {
    ClaimLimits {
        node_id: node.to_string(),
        lease_ms: 600_000,
        node_capacity: 1_000,
        per_user_limit: 1_000,
    }
}

/// Claims the next task, which the test expects there to be.
pub async fn claim(store: &dyn Store, limits: &ClaimLimits) -> (Task, Fence) {
    let task = store
        .claim_next_task(limits)
        .await
        .unwrap()
        .expect("a claimable task");
    let fence = Fence {
        task_id: task.id,
        attempt: task.attempt,
    };
    (task, fence)
}

/// Claims with a lease that runs out at once, and waits until the reaper sees it expired.
pub async fn claim_and_let_expire(store: &dyn Store) -> (Task, Fence) {
    let limits = ClaimLimits {
        lease_ms: 1,
        ..roomy("gone")
    };
    let claimed = claim(store, &limits).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    claimed
}

/// Requeues at once whatever the reaper finds.
pub fn no_backoff(_attempt: i64) -> i64 {
    0
}

pub async fn task(store: &dyn Store, owner: UserId, id: TaskId) -> Task {
    store.get_task(owner, id).await.unwrap().expect("the task")
}

pub async fn status(store: &dyn Store, owner: UserId, id: TaskId) -> TaskStatus {
    task(store, owner, id).await.status
}

/// The task's whole event log.
pub async fn events(store: &dyn Store, owner: UserId, id: TaskId) -> Vec<Event> {
    let (events, head) = store
        .list_events(owner, id, 0, 100_000)
        .await
        .unwrap()
        .expect("the task's events");
    assert_eq!(events.last().map_or(0, |event| event.seq), head);
    events
}
