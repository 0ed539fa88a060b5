//! What an attempt keeps as it works: the model transcript, usage totals, the diff so far and
//! the commit it started from. Every write is fenced by the attempt that makes it.

use async_trait::async_trait;
use berth_proto::{EventKind, TaskId, Usage};
use sqlx::types::Json;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::queue::keep_diff_sql;
use super::{Args, Column, Conn, Dialect, Row, SqlStore};
use crate::{Fence, Result, StoreError, Transcript, WorkState};

/// The rest of a `WHERE id = $1` that holds only while attempt `$2` holds the task.
const HELD: &str = "AND attempt = $2 AND status IN ('running', 'cancelling')";

#[async_trait]
impl<D: Dialect> Transcript for SqlStore<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> &'q [u8]: Encode<'q, D::Db> + Type<D::Db>,
    Json<serde_json::Value>: Column<D::Db>,
    Uuid: Column<D::Db>,
    i64: Column<D::Db>,
    Option<i64>: Column<D::Db>,
    bool: Column<D::Db>,
    f64: Column<D::Db>,
    String: Column<D::Db>,
    usize: ColumnIndex<Row<D>>,
{
    async fn list_messages(&self, task_id: TaskId) -> Result<Vec<serde_json::Value>> {
        let rows: Vec<Json<serde_json::Value>> =
            sqlx::query_scalar("SELECT message FROM task_messages WHERE task_id = $1 ORDER BY idx")
                .bind(task_id.0)
                .fetch_all(&self.readers)
                .await?;
        Ok(rows.into_iter().map(|Json(message)| message).collect())
    }

    async fn add_usage(&self, fence: Fence, usage: &Usage) -> Result<()> {
        let mut conn = self.writer.acquire().await?;
        Self::add_usage_in(&mut conn, fence, usage).await
    }

    async fn record_turn(
        &self,
        fence: Fence,
        usage: Option<&Usage>,
        message: serde_json::Value,
        events: Vec<(EventKind, serde_json::Value)>,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        if let Some(usage) = usage {
            Self::add_usage_in(&mut tx, fence, usage).await?;
        }
        Self::append_message_in(&mut tx, fence, message).await?;
        let mut notices = Vec::with_capacity(events.len());
        for (kind, payload) in events {
            let notice =
                Self::append_in(&mut tx, fence.task_id, Some(fence.attempt), kind, payload)
                    .await?
                    .ok_or(StoreError::Fenced(fence.task_id))?;
            notices.push(notice);
        }
        tx.commit().await?;
        for notice in notices {
            self.notify_subscribers(Some(notice));
        }
        Ok(())
    }

    async fn save_diff(&self, fence: Fence, diff: &[u8]) -> Result<()> {
        // Kept while the task runs, so that a crash loses at most the current step.
        let mut tx = self.write().await?;
        let held = sqlx::query(&format!(
            "UPDATE tasks SET has_diff = $3 WHERE id = $1 {HELD}"
        ))
        .bind(fence.task_id.0)
        .bind(fence.attempt)
        .bind(!diff.is_empty())
        .execute(&mut *tx)
        .await?;
        if D::rows_affected(&held) == 0 {
            tx.rollback().await?;
            return Err(StoreError::Fenced(fence.task_id));
        }
        if diff.is_empty() {
            sqlx::query("DELETE FROM task_diffs WHERE task_id = $1")
                .bind(fence.task_id.0)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(&keep_diff_sql(&format!("VALUES ($1, $2, {})", D::NOW)))
                .bind(fence.task_id.0)
                .bind(diff)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn set_base_commit(&self, fence: Fence, commit: &str) -> Result<()> {
        let updated = sqlx::query(&format!(
            "UPDATE tasks SET base_commit = COALESCE(base_commit, $3) WHERE id = $1 {HELD}"
        ))
        .bind(fence.task_id.0)
        .bind(fence.attempt)
        .bind(commit)
        .execute(&self.writer)
        .await?;
        match D::rows_affected(&updated) {
            0 => Err(StoreError::Fenced(fence.task_id)),
            _ => Ok(()),
        }
    }

    async fn work_state(&self, task_id: TaskId) -> Result<WorkState> {
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
}

impl<D: Dialect> SqlStore<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    Json<serde_json::Value>: Column<D::Db>,
    Uuid: Column<D::Db>,
    i64: Column<D::Db>,
    f64: Column<D::Db>,
    usize: ColumnIndex<Row<D>>,
{
    /// Appends a message to the task's transcript inside the caller's transaction.
    async fn append_message_in(
        conn: &mut Conn<D>,
        fence: Fence,
        message: serde_json::Value,
    ) -> Result<()> {
        // Holds the task for the insert below; a message answers any follow-up prompt.
        let held = sqlx::query(&format!(
            "UPDATE tasks SET pending_prompt = NULL WHERE id = $1 {HELD}"
        ))
        .bind(fence.task_id.0)
        .bind(fence.attempt)
        .execute(&mut *conn)
        .await?;
        if D::rows_affected(&held) == 0 {
            return Err(StoreError::Fenced(fence.task_id));
        }
        sqlx::query(&format!(
            "INSERT INTO task_messages (task_id, idx, attempt, message, created_at) \
             SELECT $1, COALESCE(MAX(idx), 0) + 1, $2, $3, {now} \
             FROM task_messages WHERE task_id = $1",
            now = D::NOW
        ))
        .bind(fence.task_id.0)
        .bind(fence.attempt)
        .bind(Json(message))
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Adds tokens and cost to the task's totals on `conn`, in a transaction or alone.
    async fn add_usage_in(conn: &mut Conn<D>, fence: Fence, usage: &Usage) -> Result<()> {
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
        .execute(conn)
        .await?;
        match D::rows_affected(&updated) {
            0 => Err(StoreError::Fenced(fence.task_id)),
            _ => Ok(()),
        }
    }
}
