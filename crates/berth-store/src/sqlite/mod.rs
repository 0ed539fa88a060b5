//! The SQLite backend: one file in WAL mode, one writer connection whose transactions begin
//! `IMMEDIATE` (so a read-then-write never fails to upgrade its lock), and a pool of readers.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use berth_proto::{Event, EventKind, Task, TaskId, TaskStatus, TokenId, TokenInfo, UserId};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{SqliteConnection, SqlitePool};

use crate::rows::{self, task_columns, EventRow, TaskRow};
use crate::signal::{EventNotice, Signals};
use crate::{Backend, Created, Fence, NewTask, NewToken, Principal, Result, Store, StoreError};
use crate::{ClaimLimits, Released, TaskEnd, TaskQuery, User};

/// The database clock, in milliseconds since the epoch.
macro_rules! now {
    () => {
        "CAST(unixepoch('subsec') * 1000 AS INTEGER)"
    };
}

mod accounts;
mod queue;
mod tokens;
mod transcript;

pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
    signals: Signals,
}

impl SqliteStore {
    /// Opens the database file, creating it and its directory if needed, and migrates it.
    pub async fn open(path: &Path) -> Result<Self> {
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
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self {
            writer,
            readers,
            signals: Signals::new(),
        })
    }

    /// Tells this process's subscribers about an event, once its transaction committed.
    fn published(&self, notice: Option<EventNotice>) {
        if let Some(notice) = notice {
            self.signals.event_appended(notice);
        }
    }

    async fn write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

async fn fetch_task(conn: &mut SqliteConnection, id: TaskId) -> Result<Task> {
    let row: TaskRow = sqlx::query_as(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE id = $1"
    ))
    .bind(id.0)
    .fetch_one(conn)
    .await?;
    row.try_into()
}

/// Appends an event inside the caller's transaction, taking the next sequence number.
/// Returns `None` when the fence does not hold (wrong attempt, or the task is not active).
async fn append_in(
    conn: &mut SqliteConnection,
    task_id: TaskId,
    fence_attempt: Option<i64>,
    kind: EventKind,
    payload: &serde_json::Value,
) -> Result<Option<EventNotice>> {
    let seq: Option<(i64, i64, uuid::Uuid)> = sqlx::query_as(concat!(
        "UPDATE tasks SET last_event_seq = last_event_seq + 1, updated_at = ",
        now!(),
        " WHERE id = $1 AND ($2 IS NULL OR (attempt = $2 AND status IN ('running', 'cancelling')))",
        " RETURNING last_event_seq, attempt, owner_id"
    ))
    .bind(task_id.0)
    .bind(fence_attempt)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((seq, attempt, owner_id)) = seq else {
        return Ok(None);
    };
    sqlx::query(concat!(
        "INSERT INTO task_events (task_id, seq, attempt, kind, payload, created_at)",
        " VALUES ($1, $2, $3, $4, $5, ",
        now!(),
        ")"
    ))
    .bind(task_id.0)
    .bind(seq)
    .bind(attempt)
    .bind(kind.as_str())
    .bind(Json(payload))
    .execute(&mut *conn)
    .await?;
    let notice = EventNotice {
        task_id,
        owner_id: owner_id.into(),
        seq,
    };
    Ok(Some(notice))
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }

    async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }

    fn work_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.signals.work()
    }

    fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<EventNotice> {
        self.signals.events()
    }

    async fn upsert_user(&self, name: &str) -> Result<User> {
        self.upsert_user_(name).await
    }

    async fn count_users(&self) -> Result<i64> {
        self.count_users_().await
    }

    async fn insert_token(&self, token: NewToken) -> Result<TokenInfo> {
        self.insert_token_(token).await
    }

    async fn authenticate(&self, token_hash: &str) -> Result<Option<Principal>> {
        self.authenticate_(token_hash).await
    }

    async fn list_tokens(&self, user_id: UserId) -> Result<Vec<TokenInfo>> {
        self.list_tokens_(user_id).await
    }

    async fn revoke_token(&self, user_id: UserId, id: TokenId) -> Result<Option<TokenInfo>> {
        self.revoke_token_(user_id, id).await
    }

    async fn insert_stream_ticket(
        &self,
        user_id: UserId,
        ticket_hash: &str,
        ttl_ms: i64,
    ) -> Result<()> {
        self.insert_stream_ticket_(user_id, ticket_hash, ttl_ms)
            .await
    }

    async fn redeem_stream_ticket(&self, ticket_hash: &str) -> Result<Option<User>> {
        self.redeem_stream_ticket_(ticket_hash).await
    }

    async fn create_task(&self, new: NewTask) -> Result<Created> {
        let mut tx = self.write().await?;
        let (key, hash) = new.idempotency.clone().unzip();
        let request = &new.request;
        let inserted: Option<(uuid::Uuid,)> =
            sqlx::query_as(concat!(
            "INSERT INTO tasks (id, owner_id, status, repo_url, git_ref, prompt, model, network,",
            " budget, timeout_secs, open_pull_request, max_attempts, not_before, created_at,",
            " updated_at, idempotency_key, request_hash, resources)",
            " VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, $8, $9, $10, $11, ", now!(), ", ",
            now!(), ", ", now!(), ", $12, $13, $14)",
            " ON CONFLICT (owner_id, idempotency_key) DO NOTHING RETURNING id"
        ))
            .bind(TaskId::new().0)
            .bind(new.owner_id.0)
            .bind(&request.repo_url)
            .bind(&request.git_ref)
            .bind(&request.prompt)
            .bind(&request.model)
            .bind(request.network.as_str())
            .bind(Json(&request.budget))
            .bind(request.timeout_secs.map(|secs| secs as i64))
            .bind(request.open_pull_request)
            .bind(new.max_attempts)
            .bind(&key)
            .bind(&hash)
            .bind(Json(&request.resources))
            .fetch_optional(&mut *tx)
            .await?;

        let Some((id,)) = inserted else {
            let row: TaskRow = sqlx::query_as(concat!(
                "SELECT ",
                task_columns!(),
                " FROM tasks WHERE owner_id = $1 AND idempotency_key = $2"
            ))
            .bind(new.owner_id.0)
            .bind(&key)
            .fetch_one(&mut *tx)
            .await?;
            // Nothing was written: end the transaction (and its locks) now.
            tx.rollback().await?;
            if row.request_hash != hash {
                return Err(StoreError::IdempotencyMismatch);
            }
            return Ok(Created {
                task: row.try_into()?,
                created: false,
            });
        };
        let status = serde_json::json!({ "status": "queued" });
        let notice = append_in(&mut tx, id.into(), None, EventKind::Status, &status).await?;
        let task = fetch_task(&mut tx, id.into()).await?;
        tx.commit().await?;
        self.published(notice);
        self.signals.wake_runners();
        Ok(Created {
            task,
            created: true,
        })
    }

    async fn get_task(&self, owner_id: UserId, id: TaskId) -> Result<Option<Task>> {
        let row: Option<TaskRow> = sqlx::query_as(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE id = $1 AND owner_id = $2"
        ))
        .bind(id.0)
        .bind(owner_id.0)
        .fetch_optional(&self.readers)
        .await?;
        row.map(Task::try_from).transpose()
    }

    async fn list_tasks(&self, owner_id: UserId, query: TaskQuery) -> Result<Vec<Task>> {
        let rows: Vec<TaskRow> = sqlx::query_as(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE owner_id = $1",
            " AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR id < $3)",
            " ORDER BY id DESC LIMIT $4"
        ))
        .bind(owner_id.0)
        .bind(query.status.map(|status| status.as_str()))
        .bind(query.before.map(|id| id.0))
        .bind(query.limit)
        .fetch_all(&self.readers)
        .await?;
        rows::tasks(rows)
    }

    async fn list_tasks_changed(
        &self,
        owner_id: UserId,
        after: (i64, TaskId),
        limit: i64,
    ) -> Result<Vec<Task>> {
        let rows: Vec<TaskRow> = sqlx::query_as(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE owner_id = $1",
            " AND (updated_at > $2 OR (updated_at = $2 AND id > $3))",
            " ORDER BY updated_at, id LIMIT $4"
        ))
        .bind(owner_id.0)
        .bind(after.0)
        .bind(after.1 .0)
        .bind(limit)
        .fetch_all(&self.readers)
        .await?;
        rows::tasks(rows)
    }

    async fn cancel_task(&self, owner_id: UserId, id: TaskId) -> Result<Option<Task>> {
        let mut tx = self.write().await?;
        let changed: Option<(String,)> = sqlx::query_as(concat!(
            "UPDATE tasks SET",
            " status = CASE status WHEN 'queued' THEN 'cancelled' ELSE 'cancelling' END,",
            " finished_at = CASE status WHEN 'queued' THEN ",
            now!(),
            " ELSE finished_at END,",
            " error = 'cancelled by its owner', updated_at = ",
            now!(),
            " WHERE id = $1 AND owner_id = $2 AND status IN ('queued', 'running')",
            " RETURNING status"
        ))
        .bind(id.0)
        .bind(owner_id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let mut notice = None;
        if let Some((status,)) = changed {
            let payload =
                serde_json::json!({ "status": status, "reason": "cancelled by its owner" });
            notice = append_in(&mut tx, id, None, EventKind::Status, &payload).await?;
        }
        let row: Option<TaskRow> = sqlx::query_as(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE id = $1 AND owner_id = $2"
        ))
        .bind(id.0)
        .bind(owner_id.0)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        self.published(notice);
        row.map(Task::try_from).transpose()
    }

    async fn list_events(
        &self,
        owner_id: UserId,
        id: TaskId,
        after: i64,
        limit: i64,
    ) -> Result<Option<(Vec<Event>, i64)>> {
        // One read transaction, so the page and the head agree.
        let mut tx = self.readers.begin().await?;
        let head: Option<i64> =
            sqlx::query_scalar("SELECT last_event_seq FROM tasks WHERE id = $1 AND owner_id = $2")
                .bind(id.0)
                .bind(owner_id.0)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(head) = head else {
            return Ok(None);
        };
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT task_id, seq, attempt, kind, payload, created_at FROM task_events
             WHERE task_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
        )
        .bind(id.0)
        .bind(after)
        .bind(head)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some((rows::events(rows)?, head)))
    }

    async fn append_event(
        &self,
        fence: Fence,
        kind: EventKind,
        payload: serde_json::Value,
    ) -> Result<i64> {
        let mut tx = self.write().await?;
        let notice = append_in(&mut tx, fence.task_id, Some(fence.attempt), kind, &payload)
            .await?
            .ok_or(StoreError::Fenced(fence.task_id))?;
        tx.commit().await?;
        self.published(Some(notice));
        Ok(notice.seq)
    }

    async fn claim_next_task(&self, limits: &ClaimLimits) -> Result<Option<Task>> {
        self.claim(limits).await
    }

    async fn heartbeat(&self, fence: Fence, lease_ms: i64) -> Result<Option<TaskStatus>> {
        self.renew(fence, lease_ms).await
    }

    async fn cancelling_on_node(&self, node_id: &str) -> Result<Vec<Fence>> {
        self.cancelling(node_id).await
    }

    async fn finish_task(&self, fence: Fence, end: TaskEnd) -> Result<()> {
        self.finish(fence, end).await
    }

    async fn release_task(
        &self,
        fence: Fence,
        reason: &str,
        retry_in_ms: Option<i64>,
    ) -> Result<Released> {
        self.release(fence, reason, retry_in_ms).await
    }

    async fn reap_expired_leases(
        &self,
        backoff_ms: &(dyn Fn(i64) -> i64 + Send + Sync),
    ) -> Result<Vec<Released>> {
        self.reap(backoff_ms).await
    }

    async fn append_message(&self, fence: Fence, message: serde_json::Value) -> Result<i64> {
        self.push_message(fence, message).await
    }

    async fn list_messages(&self, task_id: TaskId) -> Result<Vec<serde_json::Value>> {
        self.messages(task_id).await
    }

    async fn add_usage(&self, fence: Fence, usage: &berth_proto::Usage) -> Result<()> {
        self.usage(fence, usage).await
    }

    async fn save_diff(&self, fence: Fence, diff: &[u8]) -> Result<()> {
        self.checkpoint(fence, diff).await
    }

    async fn set_base_commit(&self, fence: Fence, commit: &str) -> Result<()> {
        self.base_commit(fence, commit).await
    }

    async fn work_state(&self, task_id: TaskId) -> Result<crate::WorkState> {
        self.state(task_id).await
    }

    async fn continue_task(
        &self,
        owner_id: UserId,
        id: TaskId,
        follow_up: crate::NewFollowUp,
    ) -> Result<Option<Created>> {
        self.follow_up(owner_id, id, follow_up).await
    }

    async fn get_diff(&self, owner_id: UserId, id: TaskId) -> Result<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar(
            "SELECT d.diff FROM task_diffs d JOIN tasks t ON t.id = d.task_id
             WHERE d.task_id = $1 AND t.owner_id = $2",
        )
        .bind(id.0)
        .bind(owner_id.0)
        .fetch_optional(&self.readers)
        .await?)
    }
    // Accounts
    async fn upsert_github_user(
        &self,
        identity: &crate::GithubIdentity,
        first_user_admin: bool,
    ) -> Result<crate::Account> {
        self.upsert_github_user_(identity, first_user_admin).await
    }
    async fn get_account(&self, user_id: UserId) -> Result<Option<crate::Account>> {
        self.get_account_(user_id).await
    }
    async fn list_accounts(&self) -> Result<Vec<crate::Account>> {
        self.list_accounts_().await
    }
    async fn disable_user(&self, user_id: UserId) -> Result<Option<crate::Account>> {
        self.disable_user_(user_id).await
    }
    async fn insert_session(&self, user_id: UserId, hash: &str, ttl_ms: i64) -> Result<()> {
        self.insert_session_(user_id, hash, ttl_ms).await
    }
    async fn authenticate_session(&self, hash: &str) -> Result<Option<Principal>> {
        self.authenticate_session_(hash).await
    }
    async fn delete_session(&self, hash: &str) -> Result<()> {
        self.delete_session_(hash).await
    }
    async fn insert_sign_in_state(&self, hash: &str, verifier: &str, ttl_ms: i64) -> Result<()> {
        self.insert_sign_in_state_(hash, verifier, ttl_ms).await
    }
    async fn take_sign_in_state(&self, hash: &str) -> Result<Option<String>> {
        self.take_sign_in_state_(hash).await
    }
    async fn put_github_token(&self, token: &crate::SealedToken) -> Result<()> {
        self.put_github_token_(token).await
    }
    async fn get_github_token(&self, user_id: UserId) -> Result<Option<crate::SealedToken>> {
        self.get_github_token_(user_id).await
    }
    async fn list_github_tokens(&self) -> Result<Vec<crate::SealedToken>> {
        self.list_github_tokens_().await
    }
    async fn append_audit(
        &self,
        actor_id: Option<UserId>,
        action: &str,
        subject_id: Option<UserId>,
        detail: serde_json::Value,
    ) -> Result<()> {
        self.append_audit_(actor_id, action, subject_id, detail)
            .await
    }
    async fn list_audit(&self, limit: i64) -> Result<Vec<crate::AuditEntry>> {
        self.list_audit_(limit).await
    }
}
