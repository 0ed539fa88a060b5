//! The same store again with a long history: 100,000 finished tasks with 1,000,000 events
//! written straight into its tables, then claims, a page of the task list and one task's
//! replay measured as before. Nothing the queue or those readers do should grow with it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_proto::{EventKind, TaskId, UserId};
use berth_store::TaskQuery;

use crate::{drain, enqueue, BerthQueue, Queue, USERS};

const FINISHED: usize = 100_000;
const EVENTS_EACH: usize = 10;
/// Events in the log that is replayed.
const REPLAYED: usize = 200;
/// Timed calls per latency figure.
const SAMPLES: usize = 200;

struct Figures {
    claim_complete: f64,
    list_p50: f64,
    replay_p50: f64,
}

pub async fn compare(berth: &Arc<BerthQueue>, url: &str) {
    let replayed = replayed_task(berth).await;
    let before = measure(berth, replayed).await;
    let started = Instant::now();
    add_history(url).await;
    let took = started.elapsed().as_secs_f64();
    let after = measure(berth, replayed).await;
    let events = FINISHED * EVENTS_EACH;
    println!("\n  history: {FINISHED} finished tasks and {events} events added ({took:.0} s)");
    println!(
        "  {:<46} {:>10} {:>10} {:>11}",
        "figure", "before", "after", "after/before"
    );
    let row = |figure: &str, before: f64, after: f64| {
        let precision = if before < 100.0 { 2 } else { 0 };
        println!(
            "  {figure:<46} {before:>10.precision$} {after:>10.precision$} {:>11.2}",
            after / before
        );
    };
    let claims = "claim+complete, 1 worker (tasks/s)";
    row(claims, before.claim_complete, after.claim_complete);
    let list = "list tasks, first page of 50, p50 (ms)";
    row(list, before.list_p50, after.list_p50);
    let replay = format!("replay a {REPLAYED}-event log, p50 (ms)");
    row(&replay, before.replay_p50, after.replay_p50);
}

/// A finished task with `REPLAYED` events, written through the store as a runner would.
async fn replayed_task(berth: &BerthQueue) -> (UserId, TaskId) {
    let n = 7_000_000;
    berth.enqueue(n).await;
    let (_, fence) = berth.claim(0).await.expect("the task just queued");
    let store = &berth.store;
    for _ in 0..REPLAYED - 3 {
        let text = serde_json::json!({ "text": "a line the model wrote" });
        let appended = store.append_event(fence, EventKind::AssistantText, text);
        appended.await.unwrap();
    }
    berth.complete(fence).await;
    (berth.users[n % USERS], fence.task_id)
}

async fn measure(berth: &Arc<BerthQueue>, (owner, task): (UserId, TaskId)) -> Figures {
    enqueue(berth, 0).await;
    let claim_complete = drain(berth, 1).await;
    let store = &berth.store;
    let list_p50 = p50(|n| async move {
        let query = TaskQuery {
            limit: 50,
            ..TaskQuery::default()
        };
        let page = store.list_tasks(berth.users[n % USERS], query).await;
        assert_eq!(page.unwrap().len(), 50);
    })
    .await;
    let replay_p50 = p50(|_| async move {
        let log = store.list_events(owner, task, 0, 1_000).await.unwrap();
        assert_eq!(log.unwrap().0.len(), REPLAYED);
    })
    .await;
    Figures {
        claim_complete,
        list_p50,
        replay_p50,
    }
}

/// The median time of `SAMPLES` calls, in milliseconds.
async fn p50<F, Fut>(call: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut took: Vec<Duration> = Vec::with_capacity(SAMPLES);
    for n in 0..SAMPLES {
        let started = Instant::now();
        call(n).await;
        took.push(started.elapsed());
    }
    took.sort();
    took[SAMPLES / 2].as_secs_f64() * 1000.0
}

/// Finished tasks, spread over the users, copied from a finished task of the runs before,
/// each with `EVENTS_EACH` events; then statistics, as autovacuum or `ANALYZE` keep them.
async fn add_history(url: &str) {
    let per_user = (FINISHED / USERS) as i64;
    let columns = "id, owner_id, status, repo_url, prompt, network, budget, open_pull_request, \
        attempt, max_attempts, not_before, created_at, updated_at, started_at, finished_at, \
        claimed_at, last_event_seq, resources";
    let copied = "u.id, 'succeeded', t.repo_url, 'history ' || n.i, t.network, t.budget, \
        t.open_pull_request, 1, t.max_attempts, t.not_before, t.created_at, t.updated_at, \
        t.started_at, t.finished_at, t.claimed_at, $2, t.resources \
        FROM n CROSS JOIN users u \
        CROSS JOIN (SELECT * FROM tasks WHERE status = 'succeeded' LIMIT 1) t";
    let events = |payload: &str| {
        format!(
            "INSERT INTO task_events (task_id, seq, attempt, kind, payload, created_at) \
             SELECT t.id, s.seq, 1, 'assistant_text', {payload}, t.created_at \
             FROM tasks t CROSS JOIN s WHERE t.prompt LIKE 'history %'"
        )
    };
    let payload = "'{\"text\": \"history\"}'";
    let each = EVENTS_EACH as i64;
    if url.starts_with("sqlite:") {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        let tasks = format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
             INSERT INTO tasks ({columns}) SELECT randomblob(16), {copied}"
        );
        let run = sqlx::query(&tasks).bind(per_user).bind(each);
        run.execute(&mut *tx).await.unwrap();
        let events = format!(
            "WITH RECURSIVE s(seq) AS (SELECT 1 UNION ALL SELECT seq + 1 FROM s WHERE seq < $1) \
             {}",
            events(payload)
        );
        sqlx::query(&events)
            .bind(each)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        sqlx::query("ANALYZE").execute(&mut conn).await.unwrap();
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let tasks = format!(
            "WITH n(i) AS (SELECT generate_series(1, $1::BIGINT)) \
             INSERT INTO tasks ({columns}) SELECT gen_random_uuid(), {copied}"
        );
        let run = sqlx::query(&tasks).bind(per_user).bind(each);
        run.execute(&pool).await.unwrap();
        let events = format!(
            "WITH s(seq) AS (SELECT generate_series(1, $1::BIGINT)) {}",
            events(&format!("{payload}::JSONB"))
        );
        // Loaded as a restore would be, without the trigger that announces each new event
        // (a million notifications nobody listens for).
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SET LOCAL session_replication_role = replica")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(&events)
            .bind(each)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        sqlx::query("ANALYZE").execute(&pool).await.unwrap();
        pool.close().await;
    }
}
