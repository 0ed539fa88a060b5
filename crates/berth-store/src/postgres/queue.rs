//! The queue on PostgreSQL, for many runners on many machines. A claim locks the chosen
//! user's row (so that user's running count cannot change under it), re-reads the count, and
//! takes the user's oldest queued task with `FOR UPDATE SKIP LOCKED`.

use berth_proto::{EventKind, Task, TaskStatus};
use sqlx::PgConnection;

use super::{append_in, PostgresStore};
use crate::rows::{task_columns, TaskRow};
use crate::signal::EventNotice;
use crate::{after_release, ClaimLimits, Fence, Released, Result, StoreError, TaskEnd};

const ACTIVE: &str = "('running', 'cancelling')";

impl PostgresStore {
    pub(super) async fn claim(&self, limits: &ClaimLimits) -> Result<Option<Task>> {
        let mut tx = self.write().await?;
        let node_active: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM tasks WHERE lease_owner = $1 AND status IN {ACTIVE}"
        ))
        .bind(&limits.node_id)
        .fetch_one(&mut *tx)
        .await?;
        if node_active >= limits.node_capacity {
            return Ok(None);
        }
        for user_id in self.candidate_users(&mut tx, limits.per_user_limit).await? {
            if let Some(task) = claim_for_user(&mut tx, user_id, limits).await? {
                let payload = serde_json::json!({
                    "status": "running", "attempt": task.attempt, "node": limits.node_id,
                });
                let notice = append_in(&mut tx, task.id, None, EventKind::Status, &payload).await?;
                tx.commit().await?;
                self.published(notice);
                return Ok(Some(task));
            }
        }
        // Release the user rows locked while looking, now rather than when this pooled
        // connection is next used.
        tx.rollback().await?;
        Ok(None)
    }

    /// Users with claimable work, the most deserving first (see `Store::claim_next_task`).
    async fn candidate_users(
        &self,
        conn: &mut PgConnection,
        per_user_limit: i64,
    ) -> Result<Vec<uuid::Uuid>> {
        Ok(sqlx::query_scalar(concat!(
            "SELECT u.id FROM users u",
            " CROSS JOIN LATERAL (SELECT COUNT(*) AS n FROM tasks r WHERE r.owner_id = u.id",
            "                     AND r.status IN ('running', 'cancelling')) active",
            " WHERE EXISTS (SELECT 1 FROM tasks q WHERE q.owner_id = u.id",
            "               AND q.status = 'queued' AND q.not_before <= ", now!(), ")",
            "   AND active.n < $1",
            " ORDER BY active.n,",
            "          COALESCE((SELECT MAX(c.claimed_at) FROM tasks c WHERE c.owner_id = u.id), 0),",
            "          (SELECT o.id FROM tasks o WHERE o.owner_id = u.id AND o.status = 'queued'",
            "           ORDER BY o.id LIMIT 1)",
            " LIMIT 8"
        ))
        .bind(per_user_limit)
        .fetch_all(conn)
        .await?)
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
        .fetch_optional(&self.pool)
        .await?;
        Ok(status.and_then(|status| TaskStatus::parse(&status)))
    }

    pub(super) async fn cancelling(&self, node_id: &str) -> Result<Vec<Fence>> {
        let rows: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
            "SELECT id, attempt FROM tasks WHERE lease_owner = $1 AND status = 'cancelling'",
        )
        .bind(node_id)
        .fetch_all(&self.pool)
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
            "SELECT status, max_attempts FROM tasks WHERE id = $1 AND attempt = $2 \
             AND status IN {ACTIVE} FOR UPDATE"
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
             WHERE status IN {ACTIVE} AND lease_expires_at < {} FOR UPDATE SKIP LOCKED",
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
    async fn apply(self, conn: &mut PgConnection) -> Result<(Released, Option<EventNotice>)> {
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
        if next == TaskStatus::Queued {
            sqlx::query("SELECT pg_notify('berth_work', '')")
                .execute(&mut *conn)
                .await?;
        }
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

/// Locks the user's row, re-reads their running count, and takes their oldest claimable task.
async fn claim_for_user(
    conn: &mut PgConnection,
    user_id: uuid::Uuid,
    limits: &ClaimLimits,
) -> Result<Option<Task>> {
    sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    let active: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM tasks WHERE owner_id = $1 AND status IN {ACTIVE}"
    ))
    .bind(user_id)
    .fetch_one(&mut *conn)
    .await?;
    if active >= limits.per_user_limit {
        return Ok(None);
    }
    let row: Option<TaskRow> = sqlx::query_as(concat!(
        "UPDATE tasks SET status = 'running', attempt = attempt + 1, lease_owner = $2,",
        " lease_expires_at = ",
        now!(),
        " + $3, claimed_at = ",
        now!(),
        ",",
        " started_at = COALESCE(started_at, ",
        now!(),
        "), updated_at = ",
        now!(),
        " WHERE id = (SELECT id FROM tasks WHERE owner_id = $1 AND status = 'queued'",
        "             AND not_before <= ",
        now!(),
        " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)",
        " RETURNING ",
        task_columns!()
    ))
    .bind(user_id)
    .bind(&limits.node_id)
    .bind(limits.lease_ms)
    .fetch_optional(conn)
    .await?;
    row.map(Task::try_from).transpose()
}
