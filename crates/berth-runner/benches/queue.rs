//! The queue's throughput and latency on SQLite and (with `BERTH_BENCH_DATABASE_URL` or
//! `BERTH_TEST_DATABASE_URL`) PostgreSQL, each beside the same work done by bare SQL on a
//! minimal table, printed as Berth / bare. `cargo bench -p berth-runner --bench queue`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use berth_proto::{CreateTask, TaskStatus, UserId};
use berth_store::{ClaimLimits, Fence, NewTask, Store, TaskEnd};
use tokio::sync::watch;

/// Tasks per throughput figure.
const TASKS: usize = 5_000;
/// Users the tasks are spread over, so Berth's fairness has something to choose between.
const USERS: usize = 8;
const CALLERS: usize = 4;
const RATE: u64 = 500;
const STEADY: Duration = Duration::from_secs(10);
const STEADY_WORKERS: usize = 4;
/// The poll behind the wake-up signal, as in the runner (shortened).
const POLL: Duration = Duration::from_millis(50);
/// How long the steady run waits for its last claims, so the benchmark always stops.
const SETTLE: Duration = Duration::from_secs(30);

const BERTH_DOES_MORE: &str = "\
Berth does more per task than the bare statements:
  enqueue  a full task row (repo, prompt, options, typed UUIDv7 id) plus a `created` event row,
           in one transaction, and a wake-up (NOTIFY on PostgreSQL);
  claim    a fairness choice (users with queued work, ordered by running count, last claim,
           oldest task), per-user and per-node capacity counts, a lease on the database clock,
           and a `running` event row with the next gap-free per-task sequence number; on
           PostgreSQL a transaction that also locks the chosen user's row;
  finish   a write fenced by attempt and status, plus a `succeeded` event row.
Bare: one INSERT; one UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING (BEGIN IMMEDIATE on
SQLite, FOR UPDATE SKIP LOCKED on PostgreSQL); one UPDATE to complete.";

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let berth = BerthQueue::new(berth_store::open_sqlite(dir.path()).await.unwrap()).await;
        let bare_url = format!("sqlite://{}?mode=rwc", dir.path().join("bare.db").display());
        let bare = Bare::sqlite(&bare_url).await;
        compare("SQLite", berth, bare).await;

        let admin = std::env::var("BERTH_BENCH_DATABASE_URL")
            .or_else(|_| std::env::var("BERTH_TEST_DATABASE_URL"));
        match admin {
            Ok(admin) => on_postgres(&admin).await,
            Err(_) => println!("\nPostgreSQL: skipped (set BERTH_BENCH_DATABASE_URL)"),
        }
        println!("\n{BERTH_DOES_MORE}");
    });
}

/// Runs the comparison in a fresh database, which is dropped afterwards even if it panics.
async fn on_postgres(admin: &str) {
    use sqlx::Connection;
    let name = format!("berth_bench_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut url = url::Url::parse(admin).unwrap();
    url.set_path(&name);
    let outcome = tokio::spawn(async move {
        let store = berth_store::open_url(url.as_str()).await.unwrap();
        let berth = BerthQueue::new(store).await;
        let bare = Bare::postgres(url.as_str()).await;
        compare("PostgreSQL", berth, bare).await;
    })
    .await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

/// The few operations both queues offer; task `n` is the number its creator gave it.
#[async_trait]
trait Queue: Send + Sync + 'static {
    type Claimed: Send;
    async fn enqueue(&self, n: usize);
    async fn claim(&self, worker: usize) -> Option<(usize, Self::Claimed)>;
    async fn complete(&self, claimed: Self::Claimed);
    fn work_signal(&self) -> watch::Receiver<u64>;
    async fn close(&self);
}

async fn compare(backend: &str, berth: BerthQueue, bare: Bare) {
    let (berth, bare) = (Arc::new(berth), Arc::new(bare));
    println!("\n{backend}: {TASKS} tasks per throughput figure, {USERS} users");
    println!(
        "  {:<46} {:>10} {:>10} {:>11}",
        "figure", "Berth", "bare SQL", "Berth/bare"
    );
    row(
        &format!("enqueue, {CALLERS} callers (tasks/s)"),
        enqueue(&berth, 0).await,
        enqueue(&bare, 0).await,
    );
    for (workers, round) in [(1, 1), (4, 2)] {
        if round > 1 {
            enqueue(&berth, 0).await;
            enqueue(&bare, 0).await;
        }
        row(
            &format!("claim+complete, {workers} worker(s) (tasks/s)"),
            drain(&berth, workers).await,
            drain(&bare, workers).await,
        );
    }
    let (berth_p50, berth_p99) = steady_latency(&berth).await;
    let (bare_p50, bare_p99) = steady_latency(&bare).await;
    let steady = format!("enqueue->claim at {RATE}/s, {STEADY_WORKERS} workers");
    row(&format!("{steady}, p50 (ms)"), berth_p50, bare_p50);
    row(&format!("{steady}, p99 (ms)"), berth_p99, bare_p99);
    berth.close().await;
    bare.close().await;
}

fn row(figure: &str, berth: f64, bare: f64) {
    let precision = if berth < 100.0 { 2 } else { 0 };
    println!(
        "  {figure:<46} {berth:>10.precision$} {bare:>10.precision$} {:>11.2}",
        berth / bare
    );
}

/// `TASKS` tasks from `CALLERS` concurrent callers; tasks per second.
async fn enqueue<Q: Queue>(queue: &Arc<Q>, first: usize) -> f64 {
    let started = Instant::now();
    let callers = (0..CALLERS).map(|caller| {
        let queue = queue.clone();
        tokio::spawn(async move {
            for n in (first + caller..first + TASKS).step_by(CALLERS) {
                queue.enqueue(n).await;
            }
        })
    });
    for caller in futures::future::join_all(callers).await {
        caller.unwrap();
    }
    TASKS as f64 / started.elapsed().as_secs_f64()
}

/// Claims and completes with `workers` workers until the queue is empty; tasks per second.
async fn drain<Q: Queue>(queue: &Arc<Q>, workers: usize) -> f64 {
    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let workers = (0..workers).map(|worker| {
        let (queue, done) = (queue.clone(), done.clone());
        tokio::spawn(async move {
            while let Some((_, claimed)) = queue.claim(worker).await {
                queue.complete(claimed).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    for worker in futures::future::join_all(workers).await {
        worker.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// A producer paced at `RATE` for `STEADY`, and workers that wait on the work signal with a
/// short poll behind it; p50 and p99 of created -> claimed, in milliseconds. The creation time
/// is taken just before the insert, so it is keyed by the task's number rather than its id:
/// a worker may claim the task before `create_task` has returned the id.
async fn steady_latency<Q: Queue>(queue: &Arc<Q>) -> (f64, f64) {
    let created: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let total = (RATE * STEADY.as_secs()) as usize;
    let first = 10 * TASKS;
    let stop = tokio_util::sync::CancellationToken::new();
    let workers: Vec<_> = (0..STEADY_WORKERS)
        .map(|worker| {
            let (queue, created, latencies) = (queue.clone(), created.clone(), latencies.clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut signal = queue.work_signal();
                while !stop.is_cancelled() {
                    signal.borrow_and_update();
                    while let Some((n, claimed)) = queue.claim(worker).await {
                        let at = Instant::now();
                        if let Some(created) = created.lock().unwrap().get(&n) {
                            latencies.lock().unwrap().push(at - *created);
                        }
                        queue.complete(claimed).await;
                    }
                    let _ = tokio::time::timeout(POLL, signal.changed()).await;
                }
            })
        })
        .collect();
    let mut pace = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    for n in first..first + total {
        pace.tick().await;
        created.lock().unwrap().insert(n, Instant::now());
        queue.enqueue(n).await;
    }
    let settle_by = Instant::now() + SETTLE;
    while latencies.lock().unwrap().len() < total && Instant::now() < settle_by {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    for worker in futures::future::join_all(workers).await {
        worker.unwrap();
    }
    let mut all = std::mem::take(&mut *latencies.lock().unwrap());
    assert_eq!(all.len(), total, "some tasks were not claimed in time");
    all.sort();
    let percentile = |p: usize| all[(all.len() * p).div_ceil(100) - 1].as_secs_f64() * 1000.0;
    (percentile(50), percentile(99))
}

/// Berth's store, driven as the runner drives it.
struct BerthQueue {
    store: Arc<dyn Store>,
    users: Vec<UserId>,
}

impl BerthQueue {
    async fn new(store: Arc<dyn Store>) -> Self {
        let mut users = Vec::new();
        for n in 0..USERS {
            users.push(store.upsert_user(&format!("bench{n}")).await.unwrap().id);
        }
        BerthQueue { store, users }
    }
}

#[async_trait]
impl Queue for BerthQueue {
    type Claimed = Fence;

    async fn enqueue(&self, n: usize) {
        let new = NewTask {
            owner_id: self.users[n % USERS],
            request: CreateTask::new("https://github.com/o/r", format!("task {n}")),
            max_attempts: 3,
            idempotency: None,
        };
        self.store.create_task(new).await.unwrap();
    }

    async fn claim(&self, worker: usize) -> Option<(usize, Fence)> {
        let limits = ClaimLimits {
            node_id: format!("bench{worker}"),
            lease_ms: 600_000,
            node_capacity: 1_000_000,
            per_user_limit: 1_000_000,
        };
        let task = self.store.claim_next_task(&limits).await.unwrap()?;
        let n = task.prompt.strip_prefix("task ").unwrap().parse().unwrap();
        let fence = Fence {
            task_id: task.id,
            attempt: task.attempt,
        };
        Some((n, fence))
    }

    async fn complete(&self, fence: Fence) {
        let end = TaskEnd {
            status: TaskStatus::Succeeded,
            reason: None,
            diff: None,
            branch: None,
            pull_request_url: None,
        };
        self.store.finish_task(fence, end).await.unwrap();
    }

    fn work_signal(&self) -> watch::Receiver<u64> {
        self.store.work_signal()
    }

    async fn close(&self) {
        self.store.close().await;
    }
}

/// The same queue as bare statements on a minimal table, woken by an in-process signal.
struct Bare {
    pool: BarePool,
    signal: watch::Sender<u64>,
}

enum BarePool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

const BARE_CLAIM: &str = "UPDATE bare SET status = 'running', lease_owner = $1, \
     lease_expires_at = $2, attempt = attempt + 1, seq = seq + 1 \
     WHERE id = (SELECT id FROM bare WHERE status = 'queued' ORDER BY id LIMIT 1{lock}) \
     RETURNING id, n, attempt";
const BARE_INSERT: &str = "INSERT INTO bare (status, n) VALUES ('queued', $1)";
const BARE_COMPLETE: &str = "UPDATE bare SET status = 'succeeded', lease_owner = NULL, \
     lease_expires_at = NULL, seq = seq + 1 WHERE id = $1 AND attempt = $2";

impl Bare {
    async fn sqlite(url: &str) -> Self {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
        use std::str::FromStr;
        // The same settings as Berth's writer: WAL, synchronous NORMAL, one connection.
        let options = SqliteConnectOptions::from_str(url)
            .unwrap()
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        let id = "id INTEGER PRIMARY KEY AUTOINCREMENT";
        Bare::with_table(BarePool::Sqlite(pool), id).await
    }

    async fn postgres(url: &str) -> Self {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .connect(url)
            .await
            .unwrap();
        Bare::with_table(BarePool::Postgres(pool), "id BIGSERIAL PRIMARY KEY").await
    }

    async fn with_table(pool: BarePool, id: &str) -> Self {
        let bare = Bare {
            pool,
            signal: watch::channel(0).0,
        };
        bare.execute(&format!(
            "CREATE TABLE bare ({id}, status TEXT NOT NULL, n BIGINT NOT NULL, \
             lease_owner TEXT, lease_expires_at BIGINT, attempt BIGINT NOT NULL DEFAULT 0, \
             seq BIGINT NOT NULL DEFAULT 0)"
        ))
        .await;
        bare.execute("CREATE INDEX bare_queued ON bare (status, id)")
            .await;
        bare
    }

    async fn execute(&self, sql: &str) {
        match &self.pool {
            BarePool::Sqlite(pool) => {
                sqlx::query(sql).execute(pool).await.unwrap();
            }
            BarePool::Postgres(pool) => {
                sqlx::query(sql).execute(pool).await.unwrap();
            }
        }
    }
}

#[async_trait]
impl Queue for Bare {
    type Claimed = (i64, i64);

    async fn enqueue(&self, n: usize) {
        let n = n as i64;
        match &self.pool {
            BarePool::Sqlite(pool) => {
                sqlx::query(BARE_INSERT)
                    .bind(n)
                    .execute(pool)
                    .await
                    .unwrap();
            }
            BarePool::Postgres(pool) => {
                sqlx::query(BARE_INSERT)
                    .bind(n)
                    .execute(pool)
                    .await
                    .unwrap();
            }
        }
        self.signal.send_modify(|version| *version += 1);
    }

    async fn claim(&self, worker: usize) -> Option<(usize, (i64, i64))> {
        let node = format!("bench{worker}");
        let row: Option<(i64, i64, i64)> = match &self.pool {
            BarePool::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
                let row = sqlx::query_as(&BARE_CLAIM.replace("{lock}", ""))
                    .bind(node)
                    .bind(i64::MAX)
                    .fetch_optional(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                row
            }
            BarePool::Postgres(pool) => {
                sqlx::query_as(&BARE_CLAIM.replace("{lock}", " FOR UPDATE SKIP LOCKED"))
                    .bind(node)
                    .bind(i64::MAX)
                    .fetch_optional(pool)
                    .await
                    .unwrap()
            }
        };
        row.map(|(id, n, attempt)| (n as usize, (id, attempt)))
    }

    async fn complete(&self, (id, attempt): (i64, i64)) {
        let affected = match &self.pool {
            BarePool::Sqlite(pool) => {
                let done = sqlx::query(BARE_COMPLETE).bind(id).bind(attempt);
                done.execute(pool).await.unwrap().rows_affected()
            }
            BarePool::Postgres(pool) => {
                let done = sqlx::query(BARE_COMPLETE).bind(id).bind(attempt);
                done.execute(pool).await.unwrap().rows_affected()
            }
        };
        assert_eq!(affected, 1);
    }

    fn work_signal(&self) -> watch::Receiver<u64> {
        self.signal.subscribe()
    }

    async fn close(&self) {
        match &self.pool {
            BarePool::Sqlite(pool) => pool.close().await,
            BarePool::Postgres(pool) => pool.close().await,
        }
    }
}
