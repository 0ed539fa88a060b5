//! The task table as a queue. A claim moves a task to `running` and bumps its attempt number,
//! the fence every later write of that attempt must match; how the next task is chosen is the
//! dialect's. Leases are renewed by heartbeats, and the reaper hands back those that ran out.

use async_trait::async_trait;
use berth_proto::{EventKind, Task, TaskStatus};
use sqlx::types::Json;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::events::{event_from, TakenSeq};
use super::outbox::News;
use super::{Args, AtOnce, Column, Conn, Dialect, Row, SqlStore, ACTIVE};
use crate::signal::EventNotice;
use crate::{ClaimLimits, Fence, Queue, Released, Result, StoreError, TaskEnd};

#[async_trait]
impl<D: Dialect> Queue for SqlStore<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<&'q str>: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> &'q [u8]: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<&'q [u8]>: Encode<'q, D::Db> + Type<D::Db>,
    Json<serde_json::Value>: Column<D::Db>,
    Uuid: Column<D::Db>,
    i64: Column<D::Db>,
    Option<i64>: Column<D::Db>,
    bool: Column<D::Db>,
    String: Column<D::Db>,
    usize: ColumnIndex<Row<D>>,
{
    async fn claim_next_task(&self, limits: &ClaimLimits) -> Result<Option<Task>> {
        if let AtOnce::Done(task) = D::claim_at_once(&self.writer, limits).await? {
            self.notify_subscribers(task.as_ref().map(|task| EventNotice {
                task_id: task.id,
                owner_id: task.owner_id,
                seq: task.last_event_seq,
            }));
            return Ok(task);
        }
        let mut tx = self.write().await?;
        let Some(task) = D::claim(&mut tx, limits).await? else {
            // Give back the write lock (SQLite) or the rows locked while looking (PostgreSQL)
            // now, not when this connection is next used.
            tx.rollback().await?;
            return Ok(None);
        };
        let payload = serde_json::json!({
            "status": "running", "attempt": task.attempt, "node": limits.node_id,
        });
        let taken = TakenSeq {
            task_id: task.id,
            owner_id: task.owner_id.0,
            seq: task.last_event_seq,
            attempt: task.attempt,
        };
        let notice = Self::write_event_in(&mut tx, taken, EventKind::Status, payload).await?;
        tx.commit().await?;
        self.notify_subscribers(Some(notice));
        Ok(Some(task))
    }

    async fn heartbeat(&self, fence: Fence, lease_ms: i64) -> Result<Option<TaskStatus>> {
        let status: Option<String> = sqlx::query_scalar(&format!(
            "UPDATE tasks SET lease_expires_at = {now} + $3 WHERE id = $1 AND attempt = $2 \
             AND status IN {ACTIVE} RETURNING status",
            now = D::NOW
        ))
        .bind(fence.task_id.0)
        .bind(fence.attempt)
        .bind(lease_ms)
        .fetch_optional(&self.writer)
        .await?;
        Ok(status.and_then(|status| TaskStatus::parse(&status)))
    }

    async fn cancelling_on_node(&self, node_id: &str) -> Result<Vec<Fence>> {
        // `status IN ACTIVE` as well, so that the index of active tasks is used.
        let rows = sqlx::query_as(&format!(
            "SELECT id, attempt FROM tasks WHERE lease_owner = $1 AND status IN {ACTIVE} \
             AND status = 'cancelling'"
        ))
        .bind(node_id)
        .fetch_all(&self.readers)
        .await?;
        Ok(fences(rows))
    }

    async fn held_by_node(&self, node_id: &str) -> Result<Vec<Fence>> {
        let rows = sqlx::query_as(&format!(
            "SELECT id, attempt FROM tasks WHERE lease_owner = $1 AND status IN {ACTIVE}"
        ))
        .bind(node_id)
        .fetch_all(&self.readers)
        .await?;
        Ok(fences(rows))
    }

    async fn live_attempts(&self) -> Result<Vec<Fence>> {
        let rows = sqlx::query_as(&format!(
            "SELECT id, attempt FROM tasks WHERE status IN {ACTIVE}"
        ))
        .fetch_all(&self.readers)
        .await?;
        Ok(fences(rows))
    }

    async fn finish_task(&self, fence: Fence, end: TaskEnd) -> Result<()> {
        let payload = status_payload(end.status, end.reason.as_deref());
        if D::ONE_STATEMENT_STEPS {
            // When nobody hears of the ending: the task's row, its diff and its event at once.
            // The ending is never the task's first event.
            let nobody_hears = News::nobody_hears_sql(0, &payload, "tasks.owner_id", "tasks.id");
            let sql = format!(
                "WITH done AS ({finish}), \
                 diff AS ({diff}), \
                 event AS ({event}) \
                 SELECT last_event_seq, owner_id FROM done",
                finish = finish_sql::<D>(&nobody_hears),
                diff = keep_diff_sql(&format!(
                    "SELECT id, $8, {now} FROM done WHERE $8 IS NOT NULL",
                    now = D::NOW
                )),
                event = event_from::<D>("done", "'status'", "$9"),
            );
            let done: Option<(i64, Uuid)> = bind_end(sqlx::query_as(&sql), fence, &end)
                .bind(end.diff.as_deref())
                .bind(Json(payload.clone()))
                .fetch_optional(&self.writer)
                .await?;
            if let Some((seq, owner_id)) = done {
                self.notify_subscribers(Some(EventNotice {
                    task_id: fence.task_id,
                    owner_id: owner_id.into(),
                    seq,
                }));
                return Ok(());
            }
            // Someone hears of it, or the fence does not hold: the transaction tells which.
        }
        let mut tx = self.write().await?;
        let updated: Option<(i64, Uuid)> =
            bind_end(sqlx::query_as(&finish_sql::<D>("TRUE")), fence, &end)
                .fetch_optional(&mut *tx)
                .await?;
        let (seq, owner_id) = updated.ok_or(StoreError::Fenced(fence.task_id))?;
        if let Some(diff) = &end.diff {
            sqlx::query(&keep_diff_sql(&format!("VALUES ($1, $2, {})", D::NOW)))
                .bind(fence.task_id.0)
                .bind(diff.as_slice())
                .execute(&mut *tx)
                .await?;
        }
        let taken = TakenSeq {
            task_id: fence.task_id,
            owner_id,
            seq,
            attempt: fence.attempt,
        };
        let notice = Self::write_event_in(&mut tx, taken, EventKind::Status, payload).await?;
        tx.commit().await?;
        self.notify_subscribers(Some(notice));
        Ok(())
    }

    async fn release_task(
        &self,
        fence: Fence,
        reason: &str,
        retry_in_ms: Option<i64>,
    ) -> Result<Released> {
        let mut tx = self.write().await?;
        let row: Option<(String, i64, i64)> = sqlx::query_as(&format!(
            "SELECT status, max_attempts, handbacks FROM tasks WHERE id = $1 AND attempt = $2 \
             AND status IN {ACTIVE}{for_update}",
            for_update = D::FOR_UPDATE
        ))
        .bind(fence.task_id.0)
        .bind(fence.attempt)
        .fetch_optional(&mut *tx)
        .await?;
        let (status, max_attempts, handbacks) = row.ok_or(StoreError::Fenced(fence.task_id))?;
        let status = TaskStatus::parse(&status).unwrap_or(TaskStatus::Running);
        let hand_back = HandBack {
            fence,
            status,
            max_attempts,
            handbacks,
            reason,
            retry_in_ms,
        };
        let (released, notice) = Self::hand_back(&mut tx, hand_back).await?;
        tx.commit().await?;
        self.after_hand_back(&released, notice);
        Ok(released)
    }

    async fn reap_expired_leases(
        &self,
        backoff_ms: &(dyn Fn(i64) -> i64 + Send + Sync),
    ) -> Result<Vec<Released>> {
        let mut tx = self.write().await?;
        // In owner order: each hand-back also updates its owner's `queue_users` row, and two
        // reapers taking those row locks in one order cannot deadlock.
        let expired: Vec<(Uuid, i64, String, i64, i64)> = sqlx::query_as(&format!(
            "SELECT id, attempt, status, max_attempts, handbacks FROM tasks \
             WHERE status IN {ACTIVE} AND lease_expires_at < {now} \
             ORDER BY owner_id, id{skip_locked}",
            now = D::NOW,
            skip_locked = D::FOR_UPDATE_SKIP_LOCKED
        ))
        .fetch_all(&mut *tx)
        .await?;
        let mut results = Vec::new();
        for (id, attempt, status, max_attempts, handbacks) in expired {
            let hand_back = HandBack {
                fence: Fence {
                    task_id: id.into(),
                    attempt,
                },
                status: TaskStatus::parse(&status).unwrap_or(TaskStatus::Running),
                max_attempts,
                handbacks,
                reason: "its runner stopped renewing the lease",
                retry_in_ms: Some(backoff_ms(attempt)),
            };
            results.push(Self::hand_back(&mut tx, hand_back).await?);
        }
        tx.commit().await?;
        for (released, notice) in &results {
            self.after_hand_back(released, *notice);
        }
        Ok(results.into_iter().map(|(released, _)| released).collect())
    }
}

/// An attempt handed back, by its runner or by the reaper.
struct HandBack<'a> {
    fence: Fence,
    status: TaskStatus,
    max_attempts: i64,
    /// Hand-backs so far that did not count as attempts.
    handbacks: i64,
    reason: &'a str,
    /// `None` for a drain: the attempt does not count against the task.
    retry_in_ms: Option<i64>,
}

impl<D: Dialect> SqlStore<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    Json<serde_json::Value>: Column<D::Db>,
    Uuid: Column<D::Db>,
    i64: Column<D::Db>,
    Option<i64>: Column<D::Db>,
    bool: Column<D::Db>,
    usize: ColumnIndex<Row<D>>,
{
    /// Requeues the task, or ends it, inside the caller's transaction.
    async fn hand_back(
        conn: &mut Conn<D>,
        hand_back: HandBack<'_>,
    ) -> Result<(Released, Option<EventNotice>)> {
        let HandBack {
            fence,
            status,
            max_attempts,
            handbacks,
            reason,
            retry_in_ms,
        } = hand_back;
        let counts = retry_in_ms.is_some();
        let handbacks = handbacks + i64::from(!counts);
        let used = fence.attempt - handbacks;
        let (next, reason) = after_release(status, used, max_attempts, reason, counts);
        sqlx::query(&format!(
            "UPDATE tasks SET status = $2, error = $3, lease_owner = NULL, lease_expires_at = NULL, \
             not_before = {now} + $4, updated_at = {now}, handbacks = $6, \
             finished_at = CASE WHEN $5 THEN {now} ELSE finished_at END WHERE id = $1",
            now = D::NOW
        ))
        .bind(fence.task_id.0)
        .bind(next.as_str())
        .bind(reason.as_str())
        .bind(retry_in_ms.unwrap_or(0))
        .bind(next.is_terminal())
        .bind(handbacks)
        .execute(&mut *conn)
        .await?;
        let payload = status_payload(next, Some(&reason));
        let notice = Self::append_in(conn, fence.task_id, None, EventKind::Status, payload).await?;
        let released = Released {
            task_id: fence.task_id,
            status: next,
        };
        Ok((released, notice))
    }

    fn after_hand_back(&self, released: &Released, notice: Option<EventNotice>) {
        self.notify_subscribers(notice);
        if released.status == TaskStatus::Queued {
            self.signals.wake_runners();
        }
    }
}

/// What a handed-back attempt leads to: another try, or the end of the task. `used` counts
/// the attempts used so far, this one included when it counts.
fn after_release(
    status: TaskStatus,
    used: i64,
    max_attempts: i64,
    reason: &str,
    counts_as_attempt: bool,
) -> (TaskStatus, String) {
    if status == TaskStatus::Cancelling {
        (
            TaskStatus::Cancelled,
            format!("cancelled by its owner; {reason}"),
        )
    } else if !counts_as_attempt {
        (
            TaskStatus::Queued,
            format!(
                "{reason}; handed back without using an attempt ({used} of {max_attempts} used)"
            ),
        )
    } else if used >= max_attempts {
        (
            TaskStatus::Failed,
            format!("gave up after {used} attempts: {reason}"),
        )
    } else {
        (
            TaskStatus::Queued,
            format!("{reason}; retrying (attempt {used} of {max_attempts} used)"),
        )
    }
}

/// `(id, attempt)` rows as fences.
fn fences(rows: Vec<(Uuid, i64)>) -> Vec<Fence> {
    rows.into_iter()
        .map(|(id, attempt)| Fence {
            task_id: id.into(),
            attempt,
        })
        .collect()
}

/// Ends the attempt `$2` of task `$1` as `$3` (`$4`…`$7`: the reason, whether it left a diff,
/// its branch and pull request), if it holds the task and `also`; takes the number of its
/// status event, and returns it with the owner: `last_event_seq, owner_id` (and `id,
/// attempt`, for [`event_from`]).
fn finish_sql<D: Dialect>(also: &str) -> String {
    format!(
        "UPDATE tasks SET status = $3, error = $4, has_diff = (has_diff OR $5), \
         branch = COALESCE($6, branch), pull_request_url = COALESCE($7, pull_request_url), \
         finished_at = {now}, updated_at = {now}, lease_owner = NULL, lease_expires_at = NULL, \
         last_event_seq = last_event_seq + 1 \
         WHERE id = $1 AND attempt = $2 AND status IN {ACTIVE} AND {also} \
         RETURNING last_event_seq, owner_id, id, attempt",
        now = D::NOW
    )
}

/// Keeps a task's diff, replacing the one it had: `rows` gives `(task_id, diff, created_at)`
/// (a `VALUES` or a `SELECT`).
pub(super) fn keep_diff_sql(rows: &str) -> String {
    format!(
        "INSERT INTO task_diffs (task_id, diff, created_at) {rows} \
         ON CONFLICT (task_id) DO UPDATE SET diff = excluded.diff"
    )
}

/// Binds `$1`…`$7` of [`finish_sql`].
fn bind_end<'q, Db, O>(
    query: sqlx::query::QueryAs<'q, Db, O, <Db as sqlx::Database>::Arguments<'q>>,
    fence: Fence,
    end: &'q TaskEnd,
) -> sqlx::query::QueryAs<'q, Db, O, <Db as sqlx::Database>::Arguments<'q>>
where
    Db: sqlx::Database,
    Uuid: Column<Db>,
    i64: Column<Db>,
    bool: Column<Db>,
    for<'a> &'a str: Encode<'a, Db> + Type<Db>,
    for<'a> Option<&'a str>: Encode<'a, Db> + Type<Db>,
{
    query
        .bind(fence.task_id.0)
        .bind(fence.attempt)
        .bind(end.status.as_str())
        .bind(end.reason.as_deref())
        .bind(end.diff.is_some())
        .bind(end.branch.as_deref())
        .bind(end.pull_request_url.as_deref())
}

fn status_payload(status: TaskStatus, reason: Option<&str>) -> serde_json::Value {
    match reason {
        Some(reason) => serde_json::json!({ "status": status.as_str(), "reason": reason }),
        None => serde_json::json!({ "status": status.as_str() }),
    }
}
