//! Tasks as their owner sees them: creating (idempotently), reading, listing in pages,
//! cancelling, and follow-ups on a task that has ended. Every statement is scoped to the owner.

use async_trait::async_trait;
use berth_proto::{Agent, Budget, EventKind, Resources, Task, TaskId, TaskStatus, UserId};
use sqlx::types::Json;
use sqlx::{ColumnIndex, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::events::{event_from, TakenSeq};
use super::outbox::News;
use super::{Args, Column, Conn, Dialect, Row, SqlStore};
use crate::rows::{self, task_columns, TaskRow};
use crate::signal::EventNotice;
use crate::{Created, NewFollowUp, NewTask, Result, StoreError, TaskQuery, Tasks};

#[async_trait]
impl<D: Dialect> Tasks for SqlStore<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<&'q str>: Encode<'q, D::Db> + Type<D::Db>,
    Json<serde_json::Value>: Column<D::Db>,
    for<'q> Json<&'q Budget>: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> Json<&'q Resources>: Encode<'q, D::Db> + Type<D::Db>,
    Uuid: Column<D::Db>,
    Option<Uuid>: Column<D::Db>,
    i64: Column<D::Db>,
    Option<i64>: Column<D::Db>,
    bool: Column<D::Db>,
    String: Column<D::Db>,
    Vec<u8>: Column<D::Db>,
    usize: ColumnIndex<Row<D>>,
    for<'r> TaskRow: FromRow<'r, Row<D>>,
{
    async fn count_tasks_by_status(&self) -> Result<Vec<(TaskStatus, i64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM tasks GROUP BY status")
                .fetch_all(&self.readers)
                .await?;
        rows.into_iter()
            .map(|(status, count)| {
                TaskStatus::parse(&status)
                    .map(|status| (status, count))
                    .ok_or_else(|| StoreError::Corrupt(format!("task status {status:?}")))
            })
            .collect()
    }

    async fn create_task(&self, new: NewTask) -> Result<Created> {
        let status = serde_json::json!({ "status": "queued" });
        // When nobody hears of the new task: its row and its event at once. A task from
        // GitHub records where it came from, in the transaction.
        if D::ONE_STATEMENT_STEPS && new.github.is_none() {
            let nobody_hears = News::nobody_hears_sql(1, &status, "$2", "$1");
            let sql = format!(
                "WITH inserted AS ({insert}), event AS ({event}) SELECT * FROM inserted",
                insert = insert_task_sql::<D>(&nobody_hears),
                event = event_from::<D>("inserted", "'status'", "$16"),
            );
            let inserted: Option<TaskRow> = bind_new(sqlx::query_as(&sql), &new)
                .bind(Json(status.clone()))
                .fetch_optional(&self.writer)
                .await?;
            if let Some(row) = inserted {
                let task = Task::try_from(row)?;
                self.notify_subscribers(Some(EventNotice {
                    task_id: task.id,
                    owner_id: task.owner_id,
                    seq: 1,
                }));
                self.signals.wake_runners();
                return Ok(Created {
                    task,
                    created: true,
                    first_seq: Some(1),
                });
            }
            // Someone hears of it, or the idempotency key is taken: the transaction tells.
        }
        let mut tx = self.write().await?;
        let (key, hash) = new.idempotency.clone().unzip();
        let inserted: Option<TaskRow> =
            bind_new(sqlx::query_as(&insert_task_sql::<D>("TRUE")), &new)
                .fetch_optional(&mut *tx)
                .await?;

        let Some(row) = inserted else {
            let row: TaskRow = sqlx::query_as(concat!(
                "SELECT ",
                task_columns!(),
                " FROM tasks WHERE owner_id = $1 AND idempotency_key = $2"
            ))
            .bind(new.owner_id.0)
            .bind(key.as_deref())
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
                first_seq: Some(1),
            });
        };
        let task = Task::try_from(row)?;
        let taken = TakenSeq {
            task_id: task.id,
            owner_id: new.owner_id.0,
            seq: 1,
            attempt: 0,
        };
        if let Some(origin) = &new.github {
            sqlx::query(&format!(
                "INSERT INTO github_tasks (task_id, installation_id, repository, issue_number, \
                 created_at) VALUES ($1, $2, $3, $4, {now})",
                now = D::NOW
            ))
            .bind(task.id.0)
            .bind(origin.installation_id)
            .bind(origin.repository.as_str())
            .bind(origin.issue_number)
            .execute(&mut *tx)
            .await?;
        }
        let notice = Self::write_event_in(&mut tx, taken, EventKind::Status, status).await?;
        tx.commit().await?;
        self.notify_subscribers(Some(notice));
        self.signals.wake_runners();
        Ok(Created {
            task,
            created: true,
            first_seq: Some(notice.seq),
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
        let changed: Option<(String,)> = sqlx::query_as(&format!(
            "UPDATE tasks SET \
             status = CASE status WHEN 'queued' THEN 'cancelled' ELSE 'cancelling' END, \
             finished_at = CASE status WHEN 'queued' THEN {now} ELSE finished_at END, \
             error = 'cancelled by its owner', updated_at = {now} \
             WHERE id = $1 AND owner_id = $2 AND status IN ('queued', 'running') \
             RETURNING status",
            now = D::NOW
        ))
        .bind(id.0)
        .bind(owner_id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let mut notice = None;
        if let Some((status,)) = changed {
            let payload =
                serde_json::json!({ "status": status, "reason": "cancelled by its owner" });
            notice = Self::append_in(&mut tx, id, None, EventKind::Status, payload).await?;
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
        self.notify_subscribers(notice);
        row.map(Task::try_from).transpose()
    }

    async fn continue_task(
        &self,
        owner_id: UserId,
        id: TaskId,
        follow_up: NewFollowUp,
    ) -> Result<Option<Created>> {
        let mut tx = self.write().await?;
        let status: Option<String> = sqlx::query_scalar(&format!(
            "SELECT status FROM tasks WHERE id = $1 AND owner_id = $2{for_update}",
            for_update = D::FOR_UPDATE
        ))
        .bind(id.0)
        .bind(owner_id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(status) = status else {
            tx.rollback().await?;
            return Ok(None);
        };
        if let Some((key, hash)) = &follow_up.idempotency {
            match Self::seen_follow_up(&mut tx, id, key).await? {
                Some((seen, first_seq)) if seen == *hash => {
                    let task = Self::fetch_task(&mut tx, id).await?;
                    tx.rollback().await?;
                    return Ok(Some(Created {
                        task,
                        created: false,
                        first_seq,
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
        sqlx::query(&format!(
            "UPDATE tasks SET status = 'queued', pending_prompt = $2, error = NULL, \
             finished_at = NULL, not_before = {now}, updated_at = {now}, \
             max_attempts = attempt - handbacks + $3 WHERE id = $1",
            now = D::NOW
        ))
        .bind(id.0)
        .bind(follow_up.prompt.as_str())
        .bind(follow_up.max_attempts)
        .execute(&mut *tx)
        .await?;
        let payload = serde_json::json!({
            "status": "queued", "reason": "follow-up", "prompt": follow_up.prompt,
        });
        let notice = Self::append_in(&mut tx, id, None, EventKind::Status, payload).await?;
        let first_seq = notice.map(|notice| notice.seq);
        if let Some((key, hash)) = &follow_up.idempotency {
            sqlx::query(&format!(
                "INSERT INTO follow_ups (task_id, idempotency_key, request_hash, first_seq, \
                 created_at) VALUES ($1, $2, $3, $4, {now})",
                now = D::NOW
            ))
            .bind(id.0)
            .bind(key.as_str())
            .bind(hash.as_str())
            .bind(first_seq)
            .execute(&mut *tx)
            .await?;
        }
        let task = Self::fetch_task(&mut tx, id).await?;
        tx.commit().await?;
        self.notify_subscribers(notice);
        self.signals.wake_runners();
        Ok(Some(Created {
            task,
            created: true,
            first_seq,
        }))
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
}

impl<D: Dialect> SqlStore<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    Uuid: Column<D::Db>,
    String: Column<D::Db>,
    Option<i64>: Column<D::Db>,
    usize: ColumnIndex<Row<D>>,
    for<'r> TaskRow: FromRow<'r, Row<D>>,
{
    /// The task as the caller's transaction sees it.
    pub(super) async fn fetch_task(conn: &mut Conn<D>, id: TaskId) -> Result<Task> {
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

    /// The request hash a follow-up with this key was sent with, and where its events begin.
    async fn seen_follow_up(
        conn: &mut Conn<D>,
        id: TaskId,
        key: &str,
    ) -> Result<Option<(String, Option<i64>)>> {
        Ok(sqlx::query_as(
            "SELECT request_hash, first_seq FROM follow_ups \
             WHERE task_id = $1 AND idempotency_key = $2",
        )
        .bind(id.0)
        .bind(key)
        .fetch_optional(conn)
        .await?)
    }
}

/// Inserts a new task (`$1` its id, `$2` its owner, `$3`…`$15` its request, see
/// [`bind_new`]), queued, numbering its `queued` event 1, if `only_if` (SQL); returns the row,
/// unless the owner has a task by its idempotency key already.
fn insert_task_sql<D: Dialect>(only_if: &str) -> String {
    format!(
        "INSERT INTO tasks (id, owner_id, status, repo_url, git_ref, prompt, model, network, \
         budget, timeout_secs, open_pull_request, max_attempts, not_before, created_at, \
         updated_at, idempotency_key, request_hash, resources, agent, last_event_seq) \
         SELECT $1, $2, 'queued', $3, $4, $5, $6, $7, $8, $9, $10, $11, {now}, {now}, {now}, \
         $12, $13, $14, $15, 1 WHERE {only_if} \
         ON CONFLICT (owner_id, idempotency_key) DO NOTHING RETURNING {columns}",
        now = D::NOW,
        columns = task_columns!()
    )
}

/// Binds `$1`…`$15` of [`insert_task_sql`]: a new id, and the task's owner and request.
fn bind_new<'q, Db, O>(
    query: sqlx::query::QueryAs<'q, Db, O, <Db as sqlx::Database>::Arguments<'q>>,
    new: &'q NewTask,
) -> sqlx::query::QueryAs<'q, Db, O, <Db as sqlx::Database>::Arguments<'q>>
where
    Db: sqlx::Database,
    Uuid: Column<Db>,
    i64: Column<Db>,
    Option<i64>: Column<Db>,
    bool: Column<Db>,
    for<'a> &'a str: Encode<'a, Db> + Type<Db>,
    for<'a> Option<&'a str>: Encode<'a, Db> + Type<Db>,
    for<'a> Json<&'a Budget>: Encode<'a, Db> + Type<Db>,
    for<'a> Json<&'a Resources>: Encode<'a, Db> + Type<Db>,
{
    let request = &new.request;
    let (key, hash) = match &new.idempotency {
        Some((key, hash)) => (Some(key.as_str()), Some(hash.as_str())),
        None => (None, None),
    };
    query
        .bind(TaskId::new().0)
        .bind(new.owner_id.0)
        .bind(request.repo_url.as_str())
        .bind(request.git_ref.as_deref())
        .bind(request.prompt.as_str())
        .bind(request.model.as_deref())
        // The API fills in the server's default; a request stored without it gets none.
        .bind(request.network.unwrap_or_default().as_str())
        .bind(Json(&request.budget))
        .bind(request.timeout_secs.map(|secs| secs as i64))
        .bind(request.open_pull_request)
        .bind(new.max_attempts)
        .bind(key)
        .bind(hash)
        .bind(Json(&request.resources))
        .bind(request.agent.map(Agent::as_str))
}
