//! SQLite: one file in WAL mode, one writer connection whose transactions begin `IMMEDIATE`
//! (so a read-then-write never fails to upgrade its lock), and a pool of read-only readers.
//! The one writer excludes every other writer, so no row lock or advisory lock is needed,
//! and the claim can be a single `UPDATE … RETURNING`. Another process writing to the same
//! file (a separate `berth runner`) is noticed by polling `PRAGMA data_version`. Committed
//! pages are copied from the WAL into the database file by a connection of its own in the
//! background, never by a commit (see [`copy_back`]).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::Task;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteQueryResult};

use super::{AtOnce, Dialect, SqlStore, ACTIVE};
use crate::rows::{task_columns, TaskRow};
use crate::signal::{EventNotice, Signals, TextDelta};
use crate::{Backend, ClaimLimits, Result, StoreError};

/// How often a process looks whether another process has written to the database.
const LOOK_ELSEWHERE: Duration = Duration::from_millis(10);

/// How often committed pages are copied from the WAL into the database file.
const COPY_BACK_EVERY: Duration = Duration::from_millis(500);

pub(crate) struct Sqlite {
    watcher: tokio::task::JoinHandle<()>,
    checkpointer: tokio::task::JoinHandle<()>,
}

/// Opens the database file, creating it and its directory if needed, and migrates it.
pub(crate) async fn open(path: &Path) -> Result<SqlStore<Sqlite>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|err| {
            StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                err.kind(),
                format!("cannot create data directory {}: {err}", dir.display()),
            )))
        })?;
    }
    let options = SqliteConnectOptions::from_str("sqlite:")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    // No commit copies the WAL back itself (SQLite's default, every 1,000 pages): that copy
    // syncs the database file, and the write that happened to cross the line waited for it.
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone().pragma("wal_autocheckpoint", "0"))
        .await?;
    crate::migrate(&sqlx::migrate!("./migrations/sqlite"), &writer).await?;
    let readers = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options.clone().read_only(true))
        .await?;
    let signals = Arc::new(Signals::new());
    // Where the file stands now: every commit elsewhere after this open is noticed, even one
    // made before the watcher first looks.
    let version = data_version(&writer).await?;
    let watcher = tokio::spawn(watch_other_processes(
        writer.clone(),
        signals.clone(),
        version,
    ));
    let checkpointer = sqlx::Connection::connect_with(&options).await?;
    let checkpointer = tokio::spawn(copy_back(checkpointer));
    let dialect = Sqlite {
        watcher,
        checkpointer,
    };
    SqlStore::new(dialect, writer, readers, signals).await
}

/// Copies committed pages from the WAL into the database file, on a connection of its own,
/// so that the writer never waits for it. A passive checkpoint takes no lock that writers
/// or readers wait for; it copies what no reader still needs, and the WAL starts over from
/// its beginning once all of it has been copied.
async fn copy_back(mut conn: SqliteConnection) {
    let mut tick = tokio::time::interval(COPY_BACK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let copied = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await;
        if let Err(err) = copied {
            tracing::warn!(error = %err, "copying the WAL into the database file failed");
        }
    }
}

/// Tells this process's streams to read again, and its runners to look for work, when
/// another process has committed to the database. The writer's `data_version` changes only with other connections' commits, and
/// this process has no other writing connection, so a change is always another process's.
/// Looked at only when the writer is idle: it costs a pragma that reads no page.
async fn watch_other_processes(writer: sqlx::SqlitePool, signals: Arc<Signals>, mut seen: i64) {
    let mut tick = tokio::time::interval(LOOK_ELSEWHERE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(mut conn) = writer.try_acquire() else {
            continue;
        };
        let version = sqlx::query_scalar::<_, i64>("PRAGMA data_version")
            .fetch_one(&mut *conn)
            .await;
        drop(conn);
        let Ok(version) = version else {
            continue;
        };
        if version != seen {
            signals.changed_elsewhere();
        }
        seen = version;
    }
}

async fn data_version(writer: &sqlx::SqlitePool) -> Result<i64> {
    let version = sqlx::query_scalar::<_, i64>("PRAGMA data_version")
        .fetch_one(writer)
        .await?;
    Ok(version)
}

/// Copies the database at `path` into the new file `to`. The source is opened as it is (never
/// created or migrated), and an existing `to` is refused by SQLite itself.
pub(crate) async fn backup(path: &Path, to: &Path) -> Result<()> {
    use sqlx::Connection;
    let options = SqliteConnectOptions::from_str("sqlite:")?
        .filename(path)
        .busy_timeout(Duration::from_secs(10));
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    let to = to.to_str().ok_or_else(|| {
        StoreError::Corrupt(format!("the backup path {} is not UTF-8", to.display()))
    })?;
    sqlx::query("VACUUM INTO $1")
        .bind(to)
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

impl Dialect for Sqlite {
    type Db = sqlx::Sqlite;
    const BACKEND: Backend = Backend::Sqlite;
    const NOW: &'static str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const FOR_UPDATE: &'static str = "";
    const FOR_UPDATE_SKIP_LOCKED: &'static str = "";
    const JSON_OBJECT: &'static str = "json_object";
    const ONE_STATEMENT_STEPS: bool = false;

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    /// Every process has its own database file: there is no other node to tell.
    async fn notify_account(_: &mut SqliteConnection, _: EventNotice) -> Result<()> {
        Ok(())
    }

    /// One machine, and only the processes of this one listen: no other process hears it.
    async fn publish_text(_: &sqlx::SqlitePool, signals: &Signals, delta: TextDelta) -> Result<()> {
        signals.text_written(delta);
        Ok(())
    }

    /// Write transactions already take turns on the one writer connection.
    async fn lock_sign_ins(_: &mut SqliteConnection) -> Result<()> {
        Ok(())
    }

    /// One statement: the most deserving user with claimable work and room under the
    /// per-user limit (read from their `queue_users` row), their oldest claimable task, if
    /// the node has room. Only queued tasks are indexed for it, so history is never read.
    async fn claim(conn: &mut SqliteConnection, limits: &ClaimLimits) -> Result<Option<Task>> {
        let row: Option<TaskRow> = sqlx::query_as(&format!(
            "UPDATE tasks SET status = 'running', attempt = attempt + 1, lease_owner = $1,
               lease_expires_at = {now} + $2, claimed_at = {now},
               started_at = COALESCE(started_at, {now}), updated_at = {now},
               last_event_seq = last_event_seq + 1
             WHERE id = (
               SELECT t.id FROM tasks t
               WHERE t.status = 'queued' AND t.not_before <= {now} AND t.owner_id = (
                 SELECT u.user_id FROM queue_users u
                 WHERE u.queued > 0 AND u.running < $4
                   AND EXISTS (SELECT 1 FROM tasks q WHERE q.owner_id = u.user_id
                               AND q.status = 'queued' AND q.not_before <= {now})
                 ORDER BY u.running, u.last_claimed_at,
                   (SELECT MIN(o.id) FROM tasks o WHERE o.owner_id = u.user_id
                    AND o.status = 'queued')
                 LIMIT 1)
               ORDER BY t.id LIMIT 1)
             AND (SELECT COUNT(*) FROM tasks n WHERE n.lease_owner = $1
                  AND n.status IN {ACTIVE}) < $3
             RETURNING {columns}",
            now = Self::NOW,
            columns = task_columns!()
        ))
        .bind(&limits.node_id)
        .bind(limits.lease_ms)
        .bind(limits.node_capacity)
        .bind(limits.per_user_limit)
        .fetch_optional(conn)
        .await?;
        row.map(Task::try_from).transpose()
    }

    async fn claim_at_once(_: &SqlitePool, _: &ClaimLimits) -> Result<AtOnce<Option<Task>>> {
        Ok(AtOnce::InTransaction)
    }

    fn stop(&self) {
        self.watcher.abort();
        self.checkpointer.abort();
    }
}
