//! The queue on SQLite. Every write is a `BEGIN IMMEDIATE` transaction on the one writer
//! connection, so a claim cannot interleave with any other write; the claim itself is one
//! `UPDATE … RETURNING` statement.

use berth_proto::{EventKind, Task, TaskStatus};
use sqlx::SqliteConnection;

use super::{append_in, SqliteStore};
use crate::rows::{task_columns, TaskRow};
use crate::signal::EventNotice;
use crate::{after_release, ClaimLimits, Fence, Released, Result, StoreError, TaskEnd};

const ACTIVE: &str = "('running', 'cancelling')";

impl SqliteStore {
    pub(super) async fn claim(&self, limits: &ClaimLimits) -> Result<Option<Task>> {
        let mut tx = self.write().await?;
        let row: Option<TaskRow> = sqlx::query_as(concat!(
            "UPDATE tasks SET status = 'running', attempt = attempt + 1, lease_owner = $1,",
            " lease_expires_at = ", now!(), " + $2, claimed_at = ", now!(), ",",
            " started_at = COALESCE(started_at, ", now!(), "), updated_at = ", now!(),
            " WHERE id = (",
            "   SELECT t.id FROM tasks t",
            "   WHERE t.status = 'queued' AND t.not_before <= ", now!(), " AND t.owner_id = (",
            "     SELECT u.id FROM users u",
            "     WHERE EXISTS (SELECT 1 FROM tasks q WHERE q.owner_id = u.id",
            "                   AND q.status = 'queued' AND q.not_before <= ", now!(), ")",
            "       AND (SELECT COUNT(*) FROM tasks r WHERE r.owner_id = u.id",
            "            AND r.status IN ('running', 'cancelling')) < $4",
            "     ORDER BY (SELECT COUNT(*) FROM tasks r WHERE r.owner_id = u.id",
            "               AND r.status IN ('running', 'cancelling')),",
            "              COALESCE((SELECT MAX(c.claimed_at) FROM tasks c WHERE c.owner_id = u.id), 0),",
            "              (SELECT MIN(o.id) FROM tasks o WHERE o.owner_id = u.id AND o.status = 'queued')",
            "     LIMIT 1)",
            "   ORDER BY t.id LIMIT 1)",
            " AND (SELECT COUNT(*) FROM tasks n WHERE n.lease_owner = $1",
            "      AND n.status IN ('running', 'cancelling')) < $3",
            " RETURNING ", task_columns!()
        ))
        .bind(&limits.node_id)
        .bind(limits.lease_ms)
        .bind(limits.node_capacity)
        .bind(limits.per_user_limit)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            // Give the write lock back now, not when the writer connection is next used.
            tx.rollback().await?;
            return Ok(None);
        };
        let task: Task = row.try_into()?;
        let payload = serde_json::json!({
            "status": "running", "attempt": task.attempt, "node": limits.node_id,
        });
        let notice = append_in(&mut tx, task.id, None, EventKind::Status, &payload).await?;
        tx.commit().await?;
        self.published(notice);
        Ok(Some(task))
    }

    pub(super) async fn renew(&self, fence: Fence, lease_ms: i64) -> Result<Option<TaskStatus>> {
        let status: Option<String> = sqlx::query_scalar(&format!(
            "UPDATE tasks SET lease_expires_at = {} + $3 WHERE id = $1 AND attempt = $2 \
             AND status IN {ACTIVE} RETURNING status",
            now!()
        ))
        .bind(fence.task_id.0)
        .bind(fence.attempt)
        .bind(lease_ms)
        .fetch_optional(&self.writer)
        .await?;
        Ok(status.and_then(|status| TaskStatus::parse(&status)))
    }

    pub(super) async fn cancelling(&self, node_id: &str) -> Result<Vec<Fence>> {
        let rows: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
            "SELECT id, attempt FROM tasks WHERE lease_owner = $1 AND status = 'cancelling'",
        )
        .bind(node_id)
        .fetch_all(&self.readers)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, attempt)| Fence {
                task_id: id.into(),
                attempt,
            })
            .collect())
    }

    pub(super) async fn finish(&self, fence: Fence, end: TaskEnd) -> Result<()> {
        let mut tx = self.write().await?;
        let updated = sqlx::query(&format!(
            "UPDATE tasks SET status = $3, error = $4, has_diff = (has_diff OR $5), \
             branch = COALESCE($6, branch), pull_request_url = COALESCE($7, pull_request_url), \
             finished_at = {now}, updated_at = {now}, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND attempt = $2 AND status IN {ACTIVE}",
            now = now!()
        ))
        .bind(fence.task_id.0)
        .bind(fence.attempt)
        .bind(end.status.as_str())
        .bind(&end.reason)
        .bind(end.diff.is_some())
        .bind(&end.branch)
        .bind(&end.pull_request_url)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::Fenced(fence.task_id));
        }
        if let Some(diff) = &end.diff {
            sqlx::query(concat!(
                "INSERT INTO task_diffs (task_id, diff, created_at) VALUES ($1, $2, ",
                now!(),
                ")",
                " ON CONFLICT (task_id) DO UPDATE SET diff = excluded.diff"
            ))
            .bind(fence.task_id.0)
            .bind(diff)
            .execute(&mut *tx)
            .await?;
        }
        let payload = status_payload(end.status, end.reason.as_deref());
        let notice = append_in(&mut tx, fence.task_id, None, EventKind::Status, &payload).await?;
        tx.commit().await?;
        self.published(notice);
        Ok(())
    }

    pub(super) async fn release(
        &self,
        fence: Fence,
        reason: &str,
        retry_in_ms: Option<i64>,
    ) -> Result<Released> {
        let mut tx = self.write().await?;
        let row: Option<(String, i64)> = sqlx::query_as(&format!(
            "SELECT status, max_attempts FROM tasks WHERE id = $1 AND attempt = $2 AND status IN {ACTIVE}"
        ))
        .bind(fence.task_id.0)
        .bind(fence.attempt)
        .fetch_optional(&mut *tx)
        .await?;
        let (status, max_attempts) = row.ok_or(StoreError::Fenced(fence.task_id))?;
        let status = TaskStatus::parse(&status).unwrap_or(TaskStatus::Running);
        let hand_back = HandBack {
            fence,
            status,
            max_attempts,
            reason,
            retry_in_ms,
        };
        let (released, notice) = hand_back.apply(&mut tx).await?;
        tx.commit().await?;
        self.after_hand_back(&released, notice);
        Ok(released)
    }

    pub(super) async fn reap(
        &self,
        backoff_ms: &(dyn Fn(i64) -> i64 + Send + Sync),
    ) -> Result<Vec<Released>> {
        let mut tx = self.write().await?;
        let expired: Vec<(uuid::Uuid, i64, String, i64)> = sqlx::query_as(&format!(
            "SELECT id, attempt, status, max_attempts FROM tasks \
             WHERE status IN {ACTIVE} AND lease_expires_at < {}",
            now!()
        ))
        .fetch_all(&mut *tx)
        .await?;
        let mut results = Vec::new();
        for (id, attempt, status, max_attempts) in expired {
            let hand_back = HandBack {
                fence: Fence {
                    task_id: id.into(),
                    attempt,
                },
                status: TaskStatus::parse(&status).unwrap_or(TaskStatus::Running),
                max_attempts,
                reason: "its runner stopped renewing the lease",
                retry_in_ms: Some(backoff_ms(attempt)),
            };
            results.push(hand_back.apply(&mut tx).await?);
        }
        tx.commit().await?;
        for (released, notice) in &results {
            self.after_hand_back(released, *notice);
        }
        Ok(results.into_iter().map(|(released, _)| released).collect())
    }

    fn after_hand_back(&self, released: &Released, notice: Option<EventNotice>) {
        self.published(notice);
        if released.status == TaskStatus::Queued {
            self.signals.wake_runners();
        }
    }
}

/// An attempt handed back, by its runner or by the reaper.
struct HandBack<'a> {
    fence: Fence,
    status: TaskStatus,
    max_attempts: i64,
    reason: &'a str,
    /// `None` for a drain: the attempt does not count against the task.
    retry_in_ms: Option<i64>,
}

impl HandBack<'_> {
    async fn apply(self, conn: &mut SqliteConnection) -> Result<(Released, Option<EventNotice>)> {
        let counts = self.retry_in_ms.is_some();
        let (next, reason) = after_release(
            self.status,
            self.fence.attempt,
            self.max_attempts,
            self.reason,
            counts,
        );
        let terminal = next.is_terminal();
        sqlx::query(&format!(
            "UPDATE tasks SET status = $2, error = $3, lease_owner = NULL, lease_expires_at = NULL, \
             not_before = {now} + $4, updated_at = {now}, \
             finished_at = CASE WHEN $5 THEN {now} ELSE finished_at END WHERE id = $1",
            now = now!()
        ))
        .bind(self.fence.task_id.0)
        .bind(next.as_str())
        .bind(&reason)
        .bind(self.retry_in_ms.unwrap_or(0))
        .bind(terminal)
        .execute(&mut *conn)
        .await?;
        let payload = status_payload(next, Some(&reason));
        let notice = append_in(conn, self.fence.task_id, None, EventKind::Status, &payload).await?;
        Ok((
            Released {
                task_id: self.fence.task_id,
                status: next,
            },
            notice,
        ))
    }
}

fn status_payload(status: TaskStatus, reason: Option<&str>) -> serde_json::Value {
    match reason {
        Some(reason) => serde_json::json!({ "status": status.as_str(), "reason": reason }),
        None => serde_json::json!({ "status": status.as_str() }),
    }
}
