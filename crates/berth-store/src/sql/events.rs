//! The event log: appending takes the task's next sequence number in the same transaction
//! as the row it writes, so sequence numbers have no gaps and no repeats.

use async_trait::async_trait;
use berth_proto::{Event, EventKind, TaskId, UserId};
use sqlx::types::Json;
use sqlx::{ColumnIndex, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::outbox::News;
use super::{Args, Column, Conn, Dialect, Row, SqlStore, ACTIVE};
use crate::rows::{self, EventRow};
use crate::signal::EventNotice;
use crate::{Events, Fence, Result, StoreError};

impl<D: Dialect> SqlStore<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    Json<serde_json::Value>: Column<D::Db>,
    Uuid: Column<D::Db>,
    i64: Column<D::Db>,
    Option<i64>: Column<D::Db>,
    usize: ColumnIndex<Row<D>>,
{
    /// Appends an event inside the caller's transaction, taking the next sequence number.
    /// Returns `None` when the fence does not hold (wrong attempt, or the task is not active).
    pub(super) async fn append_in(
        conn: &mut Conn<D>,
        task_id: TaskId,
        fence_attempt: Option<i64>,
        kind: EventKind,
        payload: serde_json::Value,
    ) -> Result<Option<EventNotice>> {
        let seq: Option<(Uuid, i64, i64, Uuid)> = sqlx::query_as(&take_seq::<D>())
            .bind(task_id.0)
            .bind(fence_attempt)
            .fetch_optional(&mut *conn)
            .await?;
        let Some((_, seq, attempt, owner_id)) = seq else {
            return Ok(None);
        };
        let taken = TakenSeq {
            task_id,
            owner_id,
            seq,
            attempt,
        };
        Self::write_event_in(conn, taken, kind, payload)
            .await
            .map(Some)
    }

    /// Writes the event numbered `taken.seq`, which the caller's transaction took by bumping
    /// the task's `last_event_seq` in a statement of its own (a claim, a finish, a create).
    pub(super) async fn write_event_in(
        conn: &mut Conn<D>,
        taken: TakenSeq,
        kind: EventKind,
        payload: serde_json::Value,
    ) -> Result<EventNotice> {
        let TakenSeq {
            task_id,
            owner_id,
            seq,
            attempt,
        } = taken;
        let news = match kind {
            EventKind::Status => News::of(seq, &payload),
            _ => None,
        };
        // The insert counts who hears of the news it tells, if any: one statement when
        // nobody does, as for most tasks.
        let heard = match news {
            Some(news) => news.listener_count_sql("$6", "$1"),
            None => "CAST(0 AS BIGINT)".to_string(),
        };
        let sql = format!(
            "INSERT INTO task_events (task_id, seq, attempt, kind, payload, created_at) \
             VALUES ($1, $2, $3, $4, $5, {now}) RETURNING {heard}",
            now = D::NOW
        );
        let query = sqlx::query_scalar(&sql)
            .bind(task_id.0)
            .bind(seq)
            .bind(attempt)
            .bind(kind.as_str())
            .bind(Json(payload));
        let query = match news {
            Some(_) => query.bind(owner_id),
            None => query,
        };
        let heard: i64 = query.fetch_one(&mut *conn).await?;
        if let Some(news) = news.filter(|_| heard > 0) {
            Self::queue_task_news(conn, task_id, owner_id, seq, news).await?;
        }
        // Other nodes hear of it from the row itself (PostgreSQL's `task_events_announce`).
        Ok(EventNotice {
            task_id,
            owner_id: owner_id.into(),
            seq,
        })
    }
}

/// Takes task `$1`'s next sequence number, if the attempt `$2` (or any, when `NULL`) holds
/// it; returns `id, last_event_seq, attempt, owner_id`.
fn take_seq<D: Dialect>() -> String {
    format!(
        "UPDATE tasks SET last_event_seq = last_event_seq + 1, updated_at = {now} \
         WHERE id = $1 AND ($2 IS NULL OR (attempt = $2 AND status IN {ACTIVE})) \
         RETURNING id, last_event_seq, attempt, owner_id",
        now = D::NOW
    )
}

/// Inserts one event for each row of `source`, a `WITH` of the tasks a statement changed
/// (their `id`, `attempt`, and `last_event_seq`: the number the event takes), with `kind`
/// and `payload` SQL expressions. For a statement that writes its event itself (see
/// `Dialect::ONE_STATEMENT_STEPS`).
pub(super) fn event_from<D: Dialect>(source: &str, kind: &str, payload: &str) -> String {
    format!(
        "INSERT INTO task_events (task_id, seq, attempt, kind, payload, created_at) \
         SELECT id, last_event_seq, attempt, {kind}, {payload}, {now} FROM {source}",
        now = D::NOW
    )
}

/// A sequence number a transaction has taken for the task's next event.
pub(super) struct TakenSeq {
    pub task_id: TaskId,
    pub owner_id: Uuid,
    pub seq: i64,
    /// The attempt the event belongs to.
    pub attempt: i64,
}

#[async_trait]
impl<D: Dialect> Events for SqlStore<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    Json<serde_json::Value>: Column<D::Db>,
    Uuid: Column<D::Db>,
    i64: Column<D::Db>,
    Option<i64>: Column<D::Db>,
    usize: ColumnIndex<Row<D>>,
    for<'r> EventRow: FromRow<'r, Row<D>>,
{
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
        // Only a status event can be news someone hears of (and must be told of in the same
        // transaction); any other is one statement where the dialect allows.
        if D::ONE_STATEMENT_STEPS && kind != EventKind::Status {
            let taken: Option<(Uuid, i64, i64, Uuid)> = sqlx::query_as(&format!(
                "WITH taken AS ({take}), event AS ({insert}) SELECT * FROM taken",
                take = take_seq::<D>(),
                insert = event_from::<D>("taken", "$3", "$4"),
            ))
            .bind(fence.task_id.0)
            .bind(Some(fence.attempt))
            .bind(kind.as_str())
            .bind(Json(payload))
            .fetch_optional(&self.writer)
            .await?;
            let (_, seq, _, owner_id) = taken.ok_or(StoreError::Fenced(fence.task_id))?;
            self.notify_subscribers(Some(EventNotice {
                task_id: fence.task_id,
                owner_id: owner_id.into(),
                seq,
            }));
            return Ok(seq);
        }
        let mut tx = self.write().await?;
        let notice = Self::append_in(&mut tx, fence.task_id, Some(fence.attempt), kind, payload)
            .await?
            .ok_or(StoreError::Fenced(fence.task_id))?;
        tx.commit().await?;
        self.notify_subscribers(Some(notice));
        Ok(notice.seq)
    }
}
