//! The queue's throughput and latency, on SQLite and (with `BERTH_TEST_DATABASE_URL` or
//! `BERTH_BENCH_DATABASE_URL`) PostgreSQL, each against the same work done by bare SQL
//! statements with no Berth code around them, printed as a ratio.
//!
//! Berth does more per task than the bare statements: it writes an event row with every
//! transition (gap-free per-task sequence), picks the task fairly across users, and fences
//! every write by attempt. `cargo bench -p berth-runner --bench queue`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_proto::{CreateTask, TaskStatus, UserId};
use berth_store::{ClaimLimits, Fence, NewTask, Store, TaskEnd};

const TASKS: usize = 2_000;
const RATE: u64 = 500;
const STEADY: Duration = Duration::from_secs(5);

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("bare.db").display());
        run(
            "SQLite",
            || berth_store::open_sqlite(dir.path()),
            Bare::sqlite(&url).await,
        )
        .await;
        let admin = std::env::var("BERTH_BENCH_DATABASE_URL")
            .or_else(|_| std::env::var("BERTH_TEST_DATABASE_URL"));
        match admin {
            Ok(admin) => {
                let url = fresh_database(&admin).await;
                run(
                    "PostgreSQL",
                    || berth_store::open_url(&url),
                    Bare::postgres(&url).await,
                )
                .await;
            }
            Err(_) => println!("PostgreSQL: skipped (set BERTH_BENCH_DATABASE_URL)"),
        }
    });
}

async fn fresh_database(admin: &str) -> String {
    use sqlx::Connection;
    let name = format!("berth_bench_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut url = url::Url::parse(admin).unwrap();
    url.set_path(&name);
    url.to_string()
}

async fn run<F, Fut>(backend: &str, open: F, bare: Bare)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = berth_store::Result<Arc<dyn Store>>>,
{
    let store = open().await.unwrap();
    let users: Vec<UserId> = futures::future::join_all((0..8).map(|n| {
        let store = store.clone();
        async move { store.upsert_user(&format!("bench{n}")).await.unwrap().id }
    }))
    .await;
    println!("{backend}: {TASKS} tasks per figure; Berth / bare SQL");
    let berth = enqueue(&store, &users).await;
    let raw = bare.enqueue().await;
    row("enqueue, 4 callers", berth, raw, "tasks/s");
    for workers in [1, 4] {
        if workers > 1 {
            enqueue(&store, &users).await;
            bare.enqueue().await;
        }
        let berth = drain(&store, workers).await;
        let raw = bare.drain(workers).await;
        row(
            &format!("claim + complete, {workers} worker(s)"),
            berth,
            raw,
            "tasks/s",
        );
    }
    let (p50, p99) = steady_latency(&store, &users).await;
    let (raw50, raw99) = bare.steady_latency().await;
    println!("  enqueue -> claim at {RATE}/s, 4 workers: p50 {p50:.2} ms  p99 {p99:.2} ms   (bare: p50 {raw50:.2} ms  p99 {raw99:.2} ms)");
    store.close().await;
}

fn row(what: &str, berth: f64, bare: f64, unit: &str) {
    println!(
        "  {what:<32} {berth:>9.0} {unit}   bare {bare:>9.0} {unit}   ratio {:.2}",
        berth / bare
    );
}

async fn enqueue(store: &Arc<dyn Store>, users: &[UserId]) -> f64 {
    let started = Instant::now();
    let callers = (0..4).map(|caller| {
        let (store, users) = (store.clone(), users.to_vec());
        tokio::spawn(async move {
            for n in (caller..TASKS).step_by(4) {
                let request = CreateTask::new("https://github.com/o/r", format!("task {n}"));
                let new = NewTask {
                    owner_id: users[n % users.len()],
                    request,
                    max_attempts: 3,
                    idempotency: None,
                };
                store.create_task(new).await.unwrap();
            }
        })
    });
    futures::future::join_all(callers).await;
    TASKS as f64 / started.elapsed().as_secs_f64()
}

fn limits(worker: usize) -> ClaimLimits {
    ClaimLimits {
        node_id: format!("bench{worker}"),
        lease_ms: 600_000,
        node_capacity: 1_000_000,
        per_user_limit: 1_000_000,
    }
}

fn succeeded() -> TaskEnd {
    TaskEnd {
        status: TaskStatus::Succeeded,
        reason: None,
        diff: None,
        branch: None,
        pull_request_url: None,
    }
}

/// Claims and completes until the queue is empty; tasks per second.
async fn drain(store: &Arc<dyn Store>, workers: usize) -> f64 {
    let started = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks = (0..workers).map(|worker| {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            while let Some(task) = store.claim_next_task(&limits(worker)).await.unwrap() {
                store
                    .finish_task(
                        Fence {
                            task_id: task.id,
                            attempt: task.attempt,
                        },
                        succeeded(),
                    )
                    .await
                    .unwrap();
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    });
    futures::future::join_all(tasks).await;
    done.load(std::sync::atomic::Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// A paced producer and 4 workers woken by the store's signal (with a short poll behind it).
async fn steady_latency(store: &Arc<dyn Store>, users: &[UserId]) -> (f64, f64) {
    let created: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let total = (RATE * STEADY.as_secs()) as usize;
    let stop = tokio_util::sync::CancellationToken::new();
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let (store, created, latencies, stop) = (
                store.clone(),
                created.clone(),
                latencies.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut signal = store.work_signal();
                while !stop.is_cancelled() {
                    signal.borrow_and_update();
                    while let Some(task) = store.claim_next_task(&limits(worker)).await.unwrap() {
                        let claimed = Instant::now();
                        let n: Option<usize> = task
                            .prompt
                            .strip_prefix("steady ")
                            .and_then(|n| n.parse().ok());
                        let at = n.and_then(|n| created.lock().unwrap().get(&n).copied());
                        if let Some(at) = at {
                            latencies
                                .lock()
                                .unwrap()
                                .push(claimed.duration_since(at).as_secs_f64() * 1000.0);
                        }
                        store
                            .finish_task(
                                Fence {
                                    task_id: task.id,
                                    attempt: task.attempt,
                                },
                                succeeded(),
                            )
                            .await
                            .unwrap();
                    }
                    let _ = tokio::time::timeout(Duration::from_millis(50), signal.changed()).await;
                }
            })
        })
        .collect();
    let mut pace = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    for n in 0..total {
        pace.tick().await;
        let request = CreateTask::new("https://github.com/o/r", format!("steady {n}"));
        let new = NewTask {
            owner_id: users[n % users.len()],
            request,
            max_attempts: 3,
            idempotency: None,
        };
        created.lock().unwrap().insert(n, Instant::now());
        store.create_task(new).await.unwrap();
    }
    while latencies.lock().unwrap().len() < total {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    futures::future::join_all(workers).await;
    let mut all = latencies.lock().unwrap().clone();
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (all[all.len() / 2], all[all.len() * 99 / 100])
}

/// The same queue as bare statements on a minimal table.
#[derive(Clone)]
enum Bare {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Bare {
    async fn sqlite(url: &str) -> Self {
        use std::str::FromStr;
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .unwrap()
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE bare (id INTEGER PRIMARY KEY AUTOINCREMENT, status TEXT NOT NULL, owner TEXT, \
                     lease_expires_at INTEGER, attempt INTEGER NOT NULL DEFAULT 0, created_at INTEGER)")
            .execute(&pool).await.unwrap();
        sqlx::query("CREATE INDEX bare_status ON bare(status, id)")
            .execute(&pool)
            .await
            .unwrap();
        Bare::Sqlite(pool)
    }

    async fn postgres(url: &str) -> Self {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .connect(url)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE bare (id BIGSERIAL PRIMARY KEY, status TEXT NOT NULL, owner TEXT, \
                     lease_expires_at BIGINT, attempt INTEGER NOT NULL DEFAULT 0, created_at BIGINT)")
            .execute(&pool).await.unwrap();
        sqlx::query("CREATE INDEX bare_status ON bare(status, id)")
            .execute(&pool)
            .await
            .unwrap();
        Bare::Postgres(pool)
    }

    /// Inserts a queued row carrying `n`, which its claimer gets back.
    async fn insert(&self, n: i64) -> i64 {
        let sql = "INSERT INTO bare (status, created_at) VALUES ('queued', $1) RETURNING id";
        match self {
            Bare::Sqlite(pool) => sqlx::query_scalar(sql)
                .bind(n)
                .fetch_one(pool)
                .await
                .unwrap(),
            Bare::Postgres(pool) => sqlx::query_scalar(sql)
                .bind(n)
                .fetch_one(pool)
                .await
                .unwrap(),
        }
    }

    /// Claims the oldest queued row: its id and the number it carries.
    async fn claim(&self, node: &str) -> Option<(i64, i64)> {
        match self {
            Bare::Sqlite(pool) => sqlx::query_as(
                "UPDATE bare SET status = 'running', owner = $1, attempt = attempt + 1, lease_expires_at = 1 \
                 WHERE id = (SELECT id FROM bare WHERE status = 'queued' ORDER BY id LIMIT 1) RETURNING id, created_at",
            )
            .bind(node)
            .fetch_optional(pool)
            .await
            .unwrap(),
            Bare::Postgres(pool) => sqlx::query_as(
                "UPDATE bare SET status = 'running', owner = $1, attempt = attempt + 1, lease_expires_at = 1 \
                 WHERE id = (SELECT id FROM bare WHERE status = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 RETURNING id, created_at",
            )
            .bind(node)
            .fetch_optional(pool)
            .await
            .unwrap(),
        }
    }

    async fn complete(&self, id: i64) {
        let sql = "UPDATE bare SET status = 'succeeded' WHERE id = $1 AND attempt = 1";
        match self {
            Bare::Sqlite(pool) => drop(sqlx::query(sql).bind(id).execute(pool).await.unwrap()),
            Bare::Postgres(pool) => drop(sqlx::query(sql).bind(id).execute(pool).await.unwrap()),
        }
    }

    async fn enqueue(&self) -> f64 {
        let started = Instant::now();
        let callers = (0..4).map(|caller| {
            let bare = self.clone();
            tokio::spawn(async move {
                for n in (caller..TASKS).step_by(4) {
                    bare.insert(n as i64).await;
                }
            })
        });
        futures::future::join_all(callers).await;
        TASKS as f64 / started.elapsed().as_secs_f64()
    }

    async fn drain(&self, workers: usize) -> f64 {
        let started = Instant::now();
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks = (0..workers).map(|worker| {
            let (bare, done) = (self.clone(), done.clone());
            tokio::spawn(async move {
                while let Some((id, _)) = bare.claim(&format!("bench{worker}")).await {
                    bare.complete(id).await;
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        });
        futures::future::join_all(tasks).await;
        done.load(std::sync::atomic::Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
    }

    /// Bare workers are woken the same way as Berth's, by an in-process signal.
    async fn steady_latency(&self) -> (f64, f64) {
        let created: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
        let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
        let total = (RATE * STEADY.as_secs()) as usize;
        let (signal, _) = tokio::sync::watch::channel(0u64);
        let signal = Arc::new(signal);
        let stop = tokio_util::sync::CancellationToken::new();
        let workers: Vec<_> = (0..4)
            .map(|worker| {
                let (bare, created, latencies, stop) = (
                    self.clone(),
                    created.clone(),
                    latencies.clone(),
                    stop.clone(),
                );
                let mut woken = signal.subscribe();
                tokio::spawn(async move {
                    while !stop.is_cancelled() {
                        woken.borrow_and_update();
                        while let Some((id, n)) = bare.claim(&format!("bench{worker}")).await {
                            let claimed = Instant::now();
                            let at = created.lock().unwrap().get(&n).copied();
                            if let Some(at) = at {
                                latencies
                                    .lock()
                                    .unwrap()
                                    .push(claimed.duration_since(at).as_secs_f64() * 1000.0);
                            }
                            bare.complete(id).await;
                        }
                        let _ =
                            tokio::time::timeout(Duration::from_millis(50), woken.changed()).await;
                    }
                })
            })
            .collect();
        let mut pace = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
        for n in 0..total {
            pace.tick().await;
            created.lock().unwrap().insert(n as i64, Instant::now());
            self.insert(n as i64).await;
            signal.send_modify(|v| *v += 1);
        }
        while latencies.lock().unwrap().len() < total {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        futures::future::join_all(workers).await;
        let mut all = latencies.lock().unwrap().clone();
        all.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (all[all.len() / 2], all[all.len() * 99 / 100])
    }
}
