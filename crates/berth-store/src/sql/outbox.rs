//! The outbox: messages written in the transaction of what they tell, and handed to senders
//! until acknowledged. A claim holds a message for a lease, so a sender that dies gives it up
//! by itself; an acknowledged message is never handed out again. Status events queue the news
//! of a task here ([`SqlStore::queue_task_news`]), when someone hears of it ([`News`]).

use async_trait::async_trait;
use berth_proto::TaskId;
use sqlx::types::Json;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::{Args, Column, Conn, Dialect, Row, SqlStore};
use crate::{Outbox, OutboxMessage, Result};

/// The message ids that stand for webhook ids: `msg_` and a time-ordered UUID.
fn webhook_message_id() -> String {
    format!("msg_{}", Uuid::now_v7().simple())
}

#[async_trait]
impl<D: Dialect> Outbox for SqlStore<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    Json<serde_json::Value>: Column<D::Db>,
    Uuid: Column<D::Db>,
    i64: Column<D::Db>,
    Option<i64>: Column<D::Db>,
    String: Column<D::Db>,
    usize: ColumnIndex<Row<D>>,
{
    async fn enqueue_outbox(
        &self,
        id: &str,
        topic: &str,
        payload: serde_json::Value,
    ) -> Result<bool> {
        let mut tx = self.write().await?;
        let queued = Self::enqueue_in(&mut tx, id, topic, payload).await?;
        tx.commit().await?;
        Ok(queued)
    }

    async fn claim_outbox(&self, topic: &str, lease_ms: i64) -> Result<Option<OutboxMessage>> {
        let mut tx = self.write().await?;
        let row: Option<(String, String, Json<serde_json::Value>, i64, i64)> =
            sqlx::query_as(&format!(
                "UPDATE outbox SET attempts = attempts + 1, lease_expires_at = {now} + $2 \
                 WHERE id = (SELECT id FROM outbox WHERE topic = $1 AND delivered_at IS NULL \
                   AND given_up_at IS NULL AND next_attempt_at <= {now} \
                   AND (lease_expires_at IS NULL OR lease_expires_at < {now}) \
                   ORDER BY next_attempt_at, id LIMIT 1{skip_locked}) \
                 RETURNING id, topic, payload, attempts, created_at",
                now = D::NOW,
                skip_locked = D::FOR_UPDATE_SKIP_LOCKED
            ))
            .bind(topic)
            .bind(lease_ms)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.map(
            |(id, topic, Json(payload), attempts, created_at)| OutboxMessage {
                id,
                topic,
                payload,
                attempts,
                created_at,
            },
        ))
    }

    async fn ack_outbox(&self, id: &str) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE outbox SET delivered_at = {now}, lease_expires_at = NULL, last_error = NULL \
             WHERE id = $1 AND delivered_at IS NULL",
            now = D::NOW
        ))
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn retry_outbox(
        &self,
        id: &str,
        attempt: i64,
        error: &str,
        retry_in_ms: Option<i64>,
    ) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE outbox SET lease_expires_at = NULL, last_error = $3, \
             next_attempt_at = {now} + COALESCE($4, 0), \
             given_up_at = CASE WHEN $4 IS NULL THEN {now} ELSE NULL END \
             WHERE id = $1 AND attempts = $2 AND delivered_at IS NULL AND given_up_at IS NULL",
            now = D::NOW
        ))
        .bind(id)
        .bind(attempt)
        .bind(error)
        .bind(retry_in_ms)
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}

impl<D: Dialect> SqlStore<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    Json<serde_json::Value>: Column<D::Db>,
    Uuid: Column<D::Db>,
    i64: Column<D::Db>,
    usize: ColumnIndex<Row<D>>,
{
    /// Queues a message inside the caller's transaction, unless one with its id exists.
    pub(super) async fn enqueue_in(
        conn: &mut Conn<D>,
        id: &str,
        topic: &str,
        payload: serde_json::Value,
    ) -> Result<bool> {
        let done = sqlx::query(&format!(
            "INSERT INTO outbox (id, topic, payload, created_at, next_attempt_at) \
             VALUES ($1, $2, $3, {now}, {now}) ON CONFLICT (id) DO NOTHING",
            now = D::NOW
        ))
        .bind(id)
        .bind(topic)
        .bind(Json(payload))
        .execute(conn)
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    /// Queues `news` of a task for those who hear of it (see [`News`]), in the transaction
    /// that wrote the status event telling it.
    pub(super) async fn queue_task_news(
        conn: &mut Conn<D>,
        task_id: TaskId,
        owner_id: Uuid,
        seq: i64,
        news: News,
    ) -> Result<()> {
        let Listeners {
            endpoints,
            subscriptions,
            from_github,
        } = Self::listeners(conn, task_id, owner_id, news.ended).await?;
        if from_github {
            let id = format!("github-ended:{task_id}:{seq}");
            let message = serde_json::json!({ "kind": "task_ended", "task_id": task_id });
            Self::enqueue_in(conn, &id, "github", message).await?;
        }
        if endpoints.is_empty() && subscriptions.is_empty() {
            return Ok(());
        }
        let data = Self::task_news(conn, task_id, owner_id).await?;
        Self::queue_push_news(conn, task_id, seq, &data["task"], &subscriptions).await?;
        for endpoint in endpoints {
            let body = serde_json::json!({
                "type": news.event_type,
                "timestamp": data["timestamp"],
                "data": data["task"],
            });
            let message = serde_json::json!({ "endpoint_id": endpoint, "body": body });
            Self::enqueue_in(conn, &webhook_message_id(), "webhook", message).await?;
        }
        Ok(())
    }

    /// Who hears of a task's news, in one read: the owner's webhook endpoints; and of an
    /// ending, the owner's push subscriptions and whether the task came from GitHub.
    async fn listeners(
        conn: &mut Conn<D>,
        task_id: TaskId,
        owner_id: Uuid,
        ended: bool,
    ) -> Result<Listeners> {
        let sql = format!("{} ORDER BY 1, 2", listeners_sql(ended, "$1", "$2"));
        let query = sqlx::query_as(&sql).bind(owner_id);
        let query = match ended {
            true => query.bind(task_id.0),
            false => query,
        };
        let rows: Vec<(i64, Uuid)> = query.fetch_all(conn).await?;
        let mut listeners = Listeners::default();
        for (kind, id) in rows {
            match kind {
                WEBHOOK => listeners.endpoints.push(id),
                PUSH => listeners.subscriptions.push(id),
                _ => listeners.from_github = true,
            }
        }
        Ok(listeners)
    }

    /// The task as a webhook tells it, read in the caller's transaction, and the time.
    async fn task_news(
        conn: &mut Conn<D>,
        task_id: TaskId,
        owner_id: Uuid,
    ) -> Result<serde_json::Value> {
        let Json(row): Json<serde_json::Value> = sqlx::query_scalar(&format!(
            "SELECT {object}('status', status, 'repo_url', repo_url, 'prompt', prompt, \
             'attempt', attempt, 'error', error, 'branch', branch, \
             'pull_request_url', pull_request_url, 'cost_usd', cost_usd, \
             'input_tokens', input_tokens, 'output_tokens', output_tokens, 'now', {now}) \
             FROM tasks WHERE id = $1",
            object = D::JSON_OBJECT,
            now = D::NOW
        ))
        .bind(task_id.0)
        .fetch_one(conn)
        .await?;
        let title: String = row["prompt"]
            .as_str()
            .and_then(|prompt| prompt.lines().map(str::trim).find(|l| !l.is_empty()))
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        let timestamp = row["now"]
            .as_i64()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        Ok(serde_json::json!({
            "timestamp": timestamp,
            "task": {
                "id": task_id,
                "owner_id": berth_proto::UserId(owner_id),
                "status": row["status"],
                "title": title,
                "repo_url": row["repo_url"],
                "attempt": row["attempt"],
                "error": row["error"],
                "branch": row["branch"],
                "pull_request_url": row["pull_request_url"],
                "cost_usd": row["cost_usd"],
                "input_tokens": row["input_tokens"],
                "output_tokens": row["output_tokens"],
            },
        }))
    }
}

/// What a status event tells others: to the owner's webhook endpoints, the task's creation
/// (its first event), each start and each ending; to GitHub, the ending of a task that came
/// from there; to each of the owner's push subscriptions, each ending.
#[derive(Clone, Copy)]
pub(super) struct News {
    event_type: &'static str,
    ended: bool,
}

impl News {
    /// The news a status event (`payload`, the task's `seq`-th event) carries, if any.
    pub(super) fn of(seq: i64, payload: &serde_json::Value) -> Option<News> {
        let status = payload["status"].as_str().unwrap_or_default();
        let ended = berth_proto::TaskStatus::parse(status).is_some_and(|s| s.is_terminal());
        let event_type = match status {
            "queued" if seq == 1 => "task.created",
            "running" => "task.started",
            _ if ended => "task.ended",
            _ => return None,
        };
        Some(News { event_type, ended })
    }

    /// A condition that holds when nobody hears of the news a status event `payload` (the
    /// task's `seq`-th; only a first event's number matters) carries: for a statement that
    /// writes the event itself, and so cannot tell them in the outbox. `owner` and `task` are
    /// the statement's expressions for the task's owner and id.
    pub(super) fn nobody_hears_sql(
        seq: i64,
        payload: &serde_json::Value,
        owner: &str,
        task: &str,
    ) -> String {
        match News::of(seq, payload) {
            Some(news) => format!("NOT EXISTS ({})", listeners_sql(news.ended, owner, task)),
            None => "TRUE".to_string(),
        }
    }

    /// A scalar subquery counting who hears of this news, for the statement that writes its
    /// event to return (most tasks have no listener, and then that one statement is all).
    /// `owner` and `task` are the statement's placeholders for the task's owner and id.
    pub(super) fn listener_count_sql(&self, owner: &str, task: &str) -> String {
        format!(
            "(SELECT COUNT(*) FROM ({}) heard)",
            listeners_sql(self.ended, owner, task)
        )
    }
}

const WEBHOOK: i64 = 1;
const PUSH: i64 = 2;
const GITHUB: i64 = 3;

/// `(kind, id)` rows of those who hear of a task's news (see [`News`]); `owner` and `task`
/// are the statement's expressions for the task's owner and id.
fn listeners_sql(ended: bool, owner: &str, task: &str) -> String {
    let mut sql = format!(
        "SELECT CAST({WEBHOOK} AS BIGINT), id FROM webhook_endpoints \
         WHERE owner_id = {owner} AND deleted_at IS NULL"
    );
    if ended {
        sql.push_str(&format!(
            " UNION ALL SELECT CAST({PUSH} AS BIGINT), id FROM push_subscriptions \
             WHERE owner_id = {owner} \
             UNION ALL SELECT CAST({GITHUB} AS BIGINT), task_id FROM github_tasks \
             WHERE task_id = {task}"
        ));
    }
    sql
}

/// Who hears of a task's news (see `SqlStore::listeners`).
#[derive(Default)]
struct Listeners {
    endpoints: Vec<Uuid>,
    subscriptions: Vec<Uuid>,
    from_github: bool,
}
