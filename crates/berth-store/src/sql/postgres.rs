//! PostgreSQL, for several machines sharing one database. Row locks serialise the writers of
//! one task, and different tasks never wait on each other; NOTIFY, sent inside the writing
//! transaction (by triggers, for task events and newly queued tasks), tells the other nodes,
//! and a LISTEN task feeds it into this node's signals.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::Task;
use sqlx::postgres::{PgArguments, PgConnection, PgListener, PgPoolOptions, PgQueryResult, PgRow};
use sqlx::{FromRow, Row};

use super::events::event_from;
use super::outbox::News;
use super::{AtOnce, Dialect, SqlStore, ACTIVE};
use crate::rows::{task_columns, TaskRow};
use crate::signal::{EventNotice, Signals, TextDelta};
use crate::{Backend, ClaimLimits, Result};

const WORK_CHANNEL: &str = "berth_work";
const EVENTS_CHANNEL: &str = "berth_events";
const TEXT_CHANNEL: &str = "berth_text";

/// How often this node vacuums the queue's per-user counts (see [`vacuum_queue_counts`]).
const VACUUM_COUNTS_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct Postgres {
    listener: tokio::task::JoinHandle<()>,
    vacuum: tokio::task::JoinHandle<()>,
}

/// Connects to the database the URL names, migrates it, and starts listening to other nodes.
/// TLS follows the URL's `sslmode` and `sslrootcert`, as libpq reads them.
pub(crate) async fn connect(url: &str) -> Result<SqlStore<Postgres>> {
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(tls_named)?;
    crate::migrate(&sqlx::migrate!("./migrations/postgres"), &pool).await?;
    let signals = Arc::new(Signals::new());
    let mut listener = PgListener::connect_with(&pool).await?;
    listener
        .listen_all([WORK_CHANNEL, EVENTS_CHANNEL, TEXT_CHANNEL])
        .await?;
    let listener = tokio::spawn(forward_notifications(listener, signals.clone()));
    let vacuum = tokio::spawn(vacuum_queue_counts(pool.clone()));
    let dialect = Postgres { listener, vacuum };
    SqlStore::new(dialect, pool.clone(), pool, signals).await
}

/// Says plainly when a connection failed in its TLS handshake, with the cause rustls found
/// (such as an unknown issuer), since "database error" alone sends operators looking elsewhere.
/// sqlx reports a refused certificate as an I/O error carrying the rustls error.
fn tls_named(err: sqlx::Error) -> crate::StoreError {
    let from_rustls = |io: &std::io::Error| {
        let inner = io.get_ref()?;
        inner.downcast_ref::<rustls::Error>().map(|e| e.to_string())
    };
    match err {
        sqlx::Error::Tls(cause) => crate::StoreError::Tls(cause.to_string()),
        sqlx::Error::Io(ref io) => match from_rustls(io) {
            Some(cause) => crate::StoreError::Tls(cause),
            None => err.into(),
        },
        other => other.into(),
    }
}

/// Vacuums `queue_users` every second. Each task's insert and change of status updates its
/// owner's row there, so a busy queue leaves thousands of dead versions of a few rows behind
/// each second, and every claim and count update walks past them. Autovacuum comes at most
/// once a minute per database (`autovacuum_naptime`, whatever the table's own threshold
/// says): by then the queue had slowed to a third (issue 17). The table has a row per user
/// with tasks, so vacuuming it is cheap; `SKIP_LOCKED` leaves it to another node already at it.
async fn vacuum_queue_counts(pool: sqlx::PgPool) {
    // The first after an interval, not at once: a short command (`berth token create`) that
    // opens the store is done before then, and neither vacuums nor warns.
    let first = tokio::time::Instant::now() + VACUUM_COUNTS_EVERY;
    let mut tick = tokio::time::interval_at(first, VACUUM_COUNTS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        // A statement of its own: VACUUM cannot run inside a transaction.
        let vacuumed = sqlx::raw_sql("VACUUM (SKIP_LOCKED) queue_users")
            .execute(&pool)
            .await;
        match vacuumed {
            Err(err) if !failing => {
                tracing::warn!(error = %err, "vacuuming the queue's counts failed; the queue slows until it works again");
                failing = true;
            }
            Err(_) => {}
            Ok(_) if failing => {
                tracing::info!("vacuuming the queue's counts works again");
                failing = false;
            }
            Ok(_) => {}
        }
    }
}

/// Feeds NOTIFY from other nodes into this process's signals. When the listening connection
/// is lost, notifications may have been missed: everyone is woken to re-read, and sqlx's
/// listener reconnects on the next receive.
async fn forward_notifications(mut listener: PgListener, signals: Arc<Signals>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) if notification.channel() == EVENTS_CHANNEL => {
                if let Some(notice) = EventNotice::decode(notification.payload()) {
                    signals.event_appended(notice);
                }
            }
            Ok(Some(notification)) if notification.channel() == TEXT_CHANNEL => {
                if let Some(delta) = TextDelta::decode(notification.payload()) {
                    signals.text_written(delta);
                }
            }
            Ok(Some(_)) => signals.wake_runners(),
            Ok(None) => {
                tracing::warn!("lost the LISTEN connection; reconnecting");
                signals.wake_runners();
                signals.connection_lost();
            }
            Err(err) => {
                tracing::warn!(error = %err, "LISTEN connection failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

impl Dialect for Postgres {
    type Db = sqlx::Postgres;
    const BACKEND: Backend = Backend::Postgres;
    const NOW: &'static str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";
    const BEGIN_WRITE: &'static str = "BEGIN";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const FOR_UPDATE_SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const JSON_OBJECT: &'static str = "jsonb_build_object";
    const ONE_STATEMENT_STEPS: bool = true;

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn notify_account(conn: &mut PgConnection, notice: EventNotice) -> Result<()> {
        sqlx::query("SELECT pg_notify('berth_events', $1)")
            .bind(notice.encode())
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Only through NOTIFY, which reaches this node's own listener too: deltas have no
    /// sequence number by which a subscriber could drop one heard twice.
    async fn publish_text(pool: &sqlx::PgPool, _: &Signals, delta: TextDelta) -> Result<()> {
        for piece in delta.pieces() {
            sqlx::query("SELECT pg_notify('berth_text', $1)")
                .bind(piece.encode())
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// One sign-in at a time decides who is first (admin) and who owns a GitHub id.
    async fn lock_sign_ins(conn: &mut PgConnection) -> Result<()> {
        sqlx::query("SELECT pg_advisory_xact_lock(7274001)")
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Picks the most deserving user whose `queue_users` row no other claim holds, locks
    /// it (so their running count cannot change under the claim) and takes their oldest
    /// claimable task, in one statement. Claims for different users never wait on each
    /// other; only when every deserving user is being served at this moment does a claim
    /// wait, for the first.
    async fn claim(conn: &mut PgConnection, limits: &ClaimLimits) -> Result<Option<Task>> {
        let mut passed = Vec::new();
        for _ in 0..4 {
            let user = match choose_and_claim(conn, limits, &passed).await? {
                Choice::Claimed(task) => return Ok(Some(*task)),
                // Another claim took that user's last claimable task since this one looked.
                Choice::NothingLeft(user) => {
                    passed.push(user);
                    continue;
                }
                // Waiting is safe only while this claim holds no user row (no lock cycle).
                Choice::NoUser if passed.is_empty() => wait_for_first_user(conn, limits).await?,
                Choice::NoUser => None,
            };
            let Some(user) = user else {
                return Ok(None);
            };
            if let Some(task) = claim_for_user(conn, user, limits).await? {
                return Ok(Some(task));
            }
            passed.push(user);
        }
        Ok(None)
    }

    /// Decides in one statement when the chosen user's row is free and nobody hears of
    /// their task's start (the `running` event is written in the same statement), or when
    /// no user has a claimable task; otherwise leaves the claim to the transaction.
    async fn claim_at_once(
        pool: &sqlx::PgPool,
        limits: &ClaimLimits,
    ) -> Result<AtOnce<Option<Task>>> {
        let chosen_user = "(SELECT user_id FROM chosen)";
        // The start is never the task's first event.
        let running = serde_json::json!({ "status": "running" });
        let nobody_hears = News::nobody_hears_sql(0, &running, chosen_user, "tasks.id");
        let sql = format!(
            "WITH chosen AS ({choose} FOR UPDATE OF u SKIP LOCKED),
             claimed AS ({take}),
             event AS ({event})
             SELECT chosen.user_id AS chosen_user,
               (chosen.user_id IS NOT NULL OR EXISTS ({choose})) AS waiting, claimed.*
             FROM (SELECT 1) AS one LEFT JOIN chosen ON TRUE LEFT JOIN claimed ON TRUE",
            choose = choose_user(),
            take = take_oldest_task(chosen_user, &nobody_hears),
            event = event_from::<Self>(
                "claimed",
                "'status'",
                "jsonb_build_object('status', 'running', 'attempt', attempt, 'node', $3)"
            ),
        );
        let row = bind_limits(sqlx::query(&sql), limits, &[])
            .fetch_one(pool)
            .await?;
        let claimed: Option<uuid::Uuid> = row.try_get("id")?;
        if claimed.is_some() {
            let task: Task = TaskRow::from_row(&row)?.try_into()?;
            return Ok(AtOnce::Done(Some(task)));
        }
        // A user's row another claim holds, or someone who hears of the start: the
        // transaction waits, or tells them.
        match row.try_get("waiting")? {
            true => Ok(AtOnce::InTransaction),
            false => Ok(AtOnce::Done(None)),
        }
    }

    fn stop(&self) {
        self.listener.abort();
        self.vacuum.abort();
    }
}

/// What one try of a claim found.
enum Choice {
    Claimed(Box<Task>),
    /// The chosen user, whose row this claim now holds, had no task left to take.
    NothingLeft(uuid::Uuid),
    /// Every deserving user is left out, or held by another claim.
    NoUser,
}

/// The most deserving user (see `Queue::claim_next_task`) with claimable work and room under
/// the per-user limit, if the node has room; the users in `$2` are left out.
fn choose_user() -> String {
    format!(
        "SELECT u.user_id FROM queue_users u
         WHERE u.queued > 0 AND u.running < $1 AND u.user_id <> ALL($2)
           AND EXISTS (SELECT 1 FROM tasks q WHERE q.owner_id = u.user_id
                       AND q.status = 'queued' AND q.not_before <= {now})
           AND (SELECT COUNT(*) FROM tasks n WHERE n.lease_owner = $3
                AND n.status IN {ACTIVE}) < $4
         ORDER BY u.running, u.last_claimed_at,
           (SELECT o.id FROM tasks o WHERE o.owner_id = u.user_id AND o.status = 'queued'
            ORDER BY o.id LIMIT 1)
         LIMIT 1",
        now = Postgres::NOW,
    )
}

/// Leases the oldest claimable task of the user `user` names (a value or a subquery) to the
/// node `$3` for `$5` ms, if `also`.
fn take_oldest_task(user: &str, also: &str) -> String {
    format!(
        "UPDATE tasks SET status = 'running', attempt = attempt + 1, lease_owner = $3,
           lease_expires_at = {now} + $5, claimed_at = {now},
           started_at = COALESCE(started_at, {now}), updated_at = {now},
           last_event_seq = last_event_seq + 1
         WHERE id = (SELECT id FROM tasks WHERE owner_id = {user} AND status = 'queued'
                     AND not_before <= {now} ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
           AND {also}
         RETURNING {columns}",
        now = Postgres::NOW,
        columns = task_columns!()
    )
}

/// Binds `$1`…`$5` of the statements above.
fn bind_limits<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, PgArguments>,
    limits: &'q ClaimLimits,
    passed: &'q [uuid::Uuid],
) -> sqlx::query::Query<'q, sqlx::Postgres, PgArguments> {
    query
        .bind(limits.per_user_limit)
        .bind(passed)
        .bind(&limits.node_id)
        .bind(limits.node_capacity)
        .bind(limits.lease_ms)
}

/// Chooses a user whose row no other claim holds, locks it, and takes their oldest task: one
/// round trip, whatever it finds.
async fn choose_and_claim(
    conn: &mut PgConnection,
    limits: &ClaimLimits,
    passed: &[uuid::Uuid],
) -> Result<Choice> {
    let sql = format!(
        "WITH chosen AS ({choose} FOR UPDATE OF u SKIP LOCKED),
         claimed AS ({take})
         SELECT chosen.user_id AS chosen_user, claimed.* FROM chosen LEFT JOIN claimed ON TRUE",
        choose = choose_user(),
        take = take_oldest_task("(SELECT user_id FROM chosen)", "TRUE"),
    );
    let row = bind_limits(sqlx::query(&sql), limits, passed)
        .fetch_optional(conn)
        .await?;
    let Some(row) = row else {
        return Ok(Choice::NoUser);
    };
    let user: uuid::Uuid = row.try_get("chosen_user")?;
    let claimed: Option<uuid::Uuid> = row.try_get("id")?;
    if claimed.is_none() {
        return Ok(Choice::NothingLeft(user));
    }
    let task: Task = TaskRow::from_row(&row)?.try_into()?;
    Ok(Choice::Claimed(Box::new(task)))
}

/// Waits for the row of the most deserving user, when other claims hold every deserving
/// user's, and locks it.
///
/// Waiting holds no other row meanwhile, so it can close no cycle of waits: the choice is
/// made unlocked, and then that one row is locked by its key and checked again. (A
/// `FOR UPDATE` over the ordered choice would keep the rows it waited for and found changed,
/// and then wait for the next one: it deadlocked against finishes holding a task's row.)
async fn wait_for_first_user(
    conn: &mut PgConnection,
    limits: &ClaimLimits,
) -> Result<Option<uuid::Uuid>> {
    let chosen: Option<uuid::Uuid> = bind_limits(sqlx::query(&choose_user()), limits, &[])
        .fetch_optional(&mut *conn)
        .await?
        .map(|row| row.try_get(0))
        .transpose()?;
    let Some(user_id) = chosen else {
        return Ok(None);
    };
    Ok(sqlx::query_scalar(
        "SELECT user_id FROM queue_users WHERE user_id = $1 AND queued > 0 AND running < $2 \
         FOR UPDATE",
    )
    .bind(user_id)
    .bind(limits.per_user_limit)
    .fetch_optional(conn)
    .await?)
}

/// Takes the oldest claimable task of a user whose `queue_users` row this claim holds.
async fn claim_for_user(
    conn: &mut PgConnection,
    user_id: uuid::Uuid,
    limits: &ClaimLimits,
) -> Result<Option<Task>> {
    let row: Option<TaskRow> =
        bind_limits(sqlx::query(&take_oldest_task("$6", "TRUE")), limits, &[])
            .bind(user_id)
            .try_map(|row: PgRow| TaskRow::from_row(&row))
            .fetch_optional(conn)
            .await?;
    row.map(Task::try_from).transpose()
}

#[cfg(test)]
mod tests {
    use berth_proto::{CreateTask, EventKind};
    use berth_testkit::db::{Backend, TestDb};

    use super::*;
    use crate::{Events, NewTask, NewWebhook, Queue, Tasks, Tokens, Webhooks};

    /// The claim takes a task and writes its `running` event in one statement while nobody
    /// hears of the start, says at once when there is nothing to claim, and leaves the claim
    /// to the transaction (which writes the outbox) once the owner has a webhook endpoint.
    #[tokio::test]
    async fn the_claim_is_one_statement_until_someone_hears_of_the_start() {
        let Some(backend) = Backend::postgres() else {
            return;
        };
        let db = TestDb::new(&backend).await;
        let store = connect(db.url.as_deref().expect("a PostgreSQL database"))
            .await
            .unwrap();
        let limits = ClaimLimits {
            node_id: "n1".into(),
            lease_ms: 60_000,
            node_capacity: 10,
            per_user_limit: 10,
        };
        let at_once = || Postgres::claim_at_once(&store.writer, &limits);
        assert!(
            matches!(at_once().await.unwrap(), AtOnce::Done(None)),
            "an empty queue is decided at once"
        );

        let alice = store.upsert_user("alice").await.unwrap();
        let new = || NewTask {
            owner_id: alice.id,
            request: CreateTask::new("https://example.com/r.git", "fix it"),
            max_attempts: 1,
            idempotency: None,
            github: None,
        };
        let first = store.create_task(new()).await.unwrap().task;
        let AtOnce::Done(Some(claimed)) = at_once().await.unwrap() else {
            panic!("nobody hears of the start: the one statement claims");
        };
        assert_eq!((claimed.id, claimed.attempt), (first.id, 1));
        let (events, _) = store
            .list_events(alice.id, first.id, 0, 10)
            .await
            .unwrap()
            .unwrap();
        let running = events.last().unwrap();
        assert_eq!((running.seq, running.kind), (2, EventKind::Status));
        assert_eq!(running.payload["status"], "running");
        assert_eq!(running.payload["node"], "n1");

        let hook = NewWebhook {
            owner_id: alice.id,
            url: "https://hooks.example.com/berth".into(),
            secret: "whsec_c2VjcmV0".into(),
            format: "standard".into(),
        };
        store.create_webhook(hook).await.unwrap();
        let second = store.create_task(new()).await.unwrap().task;
        assert!(
            matches!(at_once().await.unwrap(), AtOnce::InTransaction),
            "a webhook hears of the start: left to the transaction"
        );
        let taken = store.claim_next_task(&limits).await.unwrap().unwrap();
        assert_eq!(taken.id, second.id, "which then claims it");
    }
}
