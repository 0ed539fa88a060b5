//! The model transcript, usage totals and follow-ups on SQLite.

use berth_proto::{EventKind, TaskId, Usage, UserId};
use sqlx::types::Json;

use super::{append_in, fetch_task, SqliteStore};
use crate::{Created, Fence, NewFollowUp, Result, StoreError, WorkState};

const HELD: &str = "AND attempt = $2 AND status IN ('running', 'cancelling')";

impl SqliteStore {
    pub(super) async fn push_message(
        &self,
        fence: Fence,
        message: serde_json::Value,
    ) -> Result<i64> {
        let mut tx = self.write().await?;
        self.hold(&mut tx, fence).await?;
        let idx: i64 = sqlx::query_scalar(concat!(
            "INSERT INTO task_messages (task_id, idx, attempt, message, created_at)",
            " SELECT $1, COALESCE(MAX(idx), 0) + 1, $2, $3, ",
            now!(),
            " FROM task_messages WHERE task_id = $1 RETURNING idx"
        ))
        .bind(fence.task_id.0)
        .bind(fence.attempt)
        .bind(Json(&message))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(idx)
    }

    pub(super) async fn messages(&self, task_id: TaskId) -> Result<Vec<serde_json::Value>> {
        let rows: Vec<Json<serde_json::Value>> =
            sqlx::query_scalar("SELECT message FROM task_messages WHERE task_id = $1 ORDER BY idx")
                .bind(task_id.0)
                .fetch_all(&self.readers)
                .await?;
        Ok(rows.into_iter().map(|Json(message)| message).collect())
    }

    pub(super) async fn usage(&self, fence: Fence, usage: &Usage) -> Result<()> {
        let updated = sqlx::query(&format!(
            "UPDATE tasks SET input_tokens = input_tokens + $3, output_tokens = output_tokens + $4, \
             cache_write_tokens = cache_write_tokens + $5, cache_read_tokens = cache_read_tokens + $6, \
             cost_usd = cost_usd + $7 WHERE id = $1 {HELD}"
        ))
        .bind(fence.task_id.0)
        .bind(fence.attempt)
        .bind(usage.input_tokens as i64)
        .bind(usage.output_tokens as i64)
        .bind(usage.cache_write_tokens as i64)
        .bind(usage.cache_read_tokens as i64)
        .bind(usage.cost_usd)
        .execute(&self.writer)
        .await?;
        match updated.rows_affected() {
            0 => Err(StoreError::Fenced(fence.task_id)),
            _ => Ok(()),
        }
    }

    /// Keeps the work so far while a task runs: a crash loses at most the current step.
    /// An empty diff removes the stored one.
    pub(super) async fn checkpoint(&self, fence: Fence, diff: &[u8]) -> Result<()> {
        let mut tx = self.write().await?;
        let held = sqlx::query(&format!(
            "UPDATE tasks SET has_diff = $3 WHERE id = $1 {HELD}"
        ))
        .bind(fence.task_id.0)
        .bind(fence.attempt)
        .bind(!diff.is_empty())
        .execute(&mut *tx)
        .await?;
        if held.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(StoreError::Fenced(fence.task_id));
        }
        if diff.is_empty() {
            sqlx::query("DELETE FROM task_diffs WHERE task_id = $1")
                .bind(fence.task_id.0)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(concat!(
                "INSERT INTO task_diffs (task_id, diff, created_at) VALUES ($1, $2, ",
                now!(),
                ") ON CONFLICT (task_id) DO UPDATE SET diff = excluded.diff"
            ))
            .bind(fence.task_id.0)
            .bind(diff)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn base_commit(&self, fence: Fence, commit: &str) -> Result<()> {
        let updated = sqlx::query(&format!(
            "UPDATE tasks SET base_commit = COALESCE(base_commit, $3) WHERE id = $1 {HELD}"
        ))
        .bind(fence.task_id.0)
        .bind(fence.attempt)
        .bind(commit)
        .execute(&self.writer)
        .await?;
        match updated.rows_affected() {
            0 => Err(StoreError::Fenced(fence.task_id)),
            _ => Ok(()),
        }
    }

    pub(super) async fn state(&self, task_id: TaskId) -> Result<WorkState> {
        let row: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT base_commit, pending_prompt FROM tasks WHERE id = $1")
                .bind(task_id.0)
                .fetch_optional(&self.readers)
                .await?;
        let (base_commit, pending_prompt) = row.unwrap_or_default();
        Ok(WorkState {
            base_commit,
            pending_prompt,
        })
    }

    pub(super) async fn follow_up(
        &self,
        owner_id: UserId,
        id: TaskId,
        follow_up: NewFollowUp,
    ) -> Result<Option<Created>> {
        let mut tx = self.write().await?;
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM tasks WHERE id = $1 AND owner_id = $2")
                .bind(id.0)
                .bind(owner_id.0)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(status) = status else {
            tx.rollback().await?;
            return Ok(None);
        };
        if let Some((key, hash)) = &follow_up.idempotency {
            match seen_follow_up(&mut tx, id, key).await? {
                Some(seen) if seen == *hash => {
                    let task = fetch_task(&mut tx, id).await?;
                    tx.rollback().await?;
                    return Ok(Some(Created {
                        task,
                        created: false,
                    }));
                }
                Some(_) => {
                    tx.rollback().await?;
                    return Err(StoreError::IdempotencyMismatch);
                }
                None => {}
            }
        }
        if matches!(status.as_str(), "queued" | "running" | "cancelling") {
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "the task is {status}; a follow-up can be sent once it has ended"
            )));
        }
        if let Some((key, hash)) = &follow_up.idempotency {
            sqlx::query(concat!(
                "INSERT INTO follow_ups (task_id, idempotency_key, request_hash, created_at)",
                " VALUES ($1, $2, $3, ",
                now!(),
                ")"
            ))
            .bind(id.0)
            .bind(key)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(&format!(
            "UPDATE tasks SET status = 'queued', pending_prompt = $2, error = NULL, \
             finished_at = NULL, not_before = {now}, updated_at = {now}, \
             max_attempts = attempt + $3 WHERE id = $1",
            now = now!()
        ))
        .bind(id.0)
        .bind(&follow_up.prompt)
        .bind(follow_up.max_attempts)
        .execute(&mut *tx)
        .await?;
        let payload = serde_json::json!({
            "status": "queued", "reason": "follow-up", "prompt": follow_up.prompt,
        });
        let notice = append_in(&mut tx, id, None, EventKind::Status, &payload).await?;
        let task = fetch_task(&mut tx, id).await?;
        tx.commit().await?;
        self.published(notice);
        self.signals.wake_runners();
        Ok(Some(Created {
            task,
            created: true,
        }))
    }

    /// Takes the write lock on a task held by `fence`, or fails with `Fenced`. A message
    /// appended answers any follow-up prompt, so the prompt is cleared with it.
    async fn hold(&self, conn: &mut sqlx::SqliteConnection, fence: Fence) -> Result<()> {
        let held = sqlx::query(&format!(
            "UPDATE tasks SET pending_prompt = NULL WHERE id = $1 {HELD}"
        ))
        .bind(fence.task_id.0)
        .bind(fence.attempt)
        .execute(conn)
        .await?;
        match held.rows_affected() {
            0 => Err(StoreError::Fenced(fence.task_id)),
            _ => Ok(()),
        }
    }
}

/// The request hash a follow-up with this key was sent with, if one was.
async fn seen_follow_up(
    conn: &mut sqlx::SqliteConnection,
    id: TaskId,
    key: &str,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT request_hash FROM follow_ups WHERE task_id = $1 AND idempotency_key = $2",
    )
    .bind(id.0)
    .bind(key)
    .fetch_optional(conn)
    .await?)
}
