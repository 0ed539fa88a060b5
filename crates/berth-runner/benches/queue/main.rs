//! The queue's throughput and latency on SQLite and (with `BERTH_BENCH_DATABASE_URL` or
//! `BERTH_TEST_DATABASE_URL`) PostgreSQL, each beside the same work done by bare SQL on a
//! minimal table, printed as Berth / bare; then the same store again with a long history
//! (see `history`). `cargo bench -p berth-runner --bench queue`.

mod bare;
mod history;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use berth_proto::{CreateTask, TaskStatus, UserId};
use berth_store::{ClaimLimits, Fence, NewTask, Store, TaskEnd};
use tokio::sync::watch;

use bare::Bare;

/// Tasks per throughput figure.
const TASKS: usize = 5_000;
/// Users the tasks are spread over, so Berth's fairness has something to choose between.
const USERS: usize = 8;
const CALLERS: usize = 4;
/// Enqueue rates of the steady runs, tasks per second.
const RATES: [u64; 2] = [100, 500];
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
Since the `queue_users` rows (migration 0015), the claim reads and locks one small row per
user (SKIP LOCKED on PostgreSQL) instead of counting the user's tasks, and triggers keep
those counts as statuses change.
Bare: one INSERT; one UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING (BEGIN IMMEDIATE on
SQLite, FOR UPDATE SKIP LOCKED on PostgreSQL); one UPDATE to complete.";

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let berth = BerthQueue::new(berth_store::open_sqlite(dir.path()).await.unwrap()).await;
        let bare_url = format!("sqlite://{}?mode=rwc", dir.path().join("bare.db").display());
        let bare = Bare::sqlite(&bare_url).await;
        let berth_url = format!("sqlite://{}", dir.path().join("berth.db").display());
        compare("SQLite", berth, bare, &berth_url).await;

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
        compare("PostgreSQL", berth, bare, url.as_str()).await;
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
pub trait Queue: Send + Sync + 'static {
    type Claimed: Send;
    async fn enqueue(&self, n: usize);
    async fn claim(&self, worker: usize) -> Option<(usize, Self::Claimed)>;
    async fn complete(&self, claimed: Self::Claimed);
    fn work_signal(&self) -> watch::Receiver<u64>;
    async fn close(&self);
}

async fn compare(backend: &str, berth: BerthQueue, bare: Bare, berth_url: &str) {
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
    for (workers, round) in [(1, 1), (4, 2), (8, 3)] {
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
    for rate in RATES {
        let (berth_p50, berth_p99) = steady_latency(&berth, rate).await;
        let (bare_p50, bare_p99) = steady_latency(&bare, rate).await;
        let steady = format!("enqueue->claim at {rate}/s, {STEADY_WORKERS} workers");
        row(&format!("{steady}, p50 (ms)"), berth_p50, bare_p50);
        row(&format!("{steady}, p99 (ms)"), berth_p99, bare_p99);
    }
    bare.close().await;
    history::compare(&berth, berth_url).await;
    berth.close().await;
}

fn row(figure: &str, berth: f64, bare: f64) {
    let precision = if berth < 100.0 { 2 } else { 0 };
    println!(
        "  {figure:<46} {berth:>10.precision$} {bare:>10.precision$} {:>11.2}",
        berth / bare
    );
}

/// `TASKS` tasks from `CALLERS` concurrent callers; tasks per second.
pub async fn enqueue<Q: Queue>(queue: &Arc<Q>, first: usize) -> f64 {
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
pub async fn drain<Q: Queue>(queue: &Arc<Q>, workers: usize) -> f64 {
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

/// A producer paced at `rate` for `STEADY`, and workers that wait on the work signal with a
/// short poll behind it; p50 and p99 of created -> claimed, in milliseconds. The creation time
/// is taken just before the insert, so it is keyed by the task's number rather than its id:
/// a worker may claim the task before `create_task` has returned the id.
async fn steady_latency<Q: Queue>(queue: &Arc<Q>, rate: u64) -> (f64, f64) {
    let created: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let total = (rate * STEADY.as_secs()) as usize;
    let first = 10 * TASKS + 1_000_000 * rate as usize;
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
    let mut pace = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
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
pub struct BerthQueue {
    pub store: Arc<dyn Store>,
    pub users: Vec<UserId>,
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
            github: None,
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
