//! Users' Web Push subscriptions, and the `push` messages an ending of a task queues for each
//! of its owner's subscriptions. A removed subscription is deleted: messages already queued for
//! it are dropped by the sender.

use async_trait::async_trait;
use berth_proto::{PushSubscriptionId, TaskId, UserId};
use sqlx::types::Json;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::{Args, Column, Conn, Dialect, Row, SqlStore};
use crate::{NewPushSubscription, PushSubscription, PushSubscriptions, Result};

type SubscriptionRow = (Uuid, Uuid, String, String, String, i64);

const COLUMNS: &str = "id, owner_id, endpoint, p256dh, auth, created_at";

fn subscription(
    (id, owner_id, endpoint, p256dh, auth, created_at): SubscriptionRow,
) -> PushSubscription {
    PushSubscription {
        id: id.into(),
        owner_id: owner_id.into(),
        endpoint,
        p256dh,
        auth,
        created_at,
    }
}

#[async_trait]
impl<D: Dialect> PushSubscriptions for SqlStore<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    Uuid: Column<D::Db>,
    i64: Column<D::Db>,
    String: Column<D::Db>,
    usize: ColumnIndex<Row<D>>,
{
    async fn put_push_subscription(
        &self,
        new: NewPushSubscription,
    ) -> Result<(PushSubscription, bool)> {
        let id = PushSubscriptionId::new();
        let row: SubscriptionRow = sqlx::query_as(&format!(
            "INSERT INTO push_subscriptions (id, owner_id, endpoint, p256dh, auth, created_at) \
             VALUES ($1, $2, $3, $4, $5, {now}) \
             ON CONFLICT (owner_id, endpoint) \
             DO UPDATE SET p256dh = excluded.p256dh, auth = excluded.auth \
             RETURNING {COLUMNS}",
            now = D::NOW
        ))
        .bind(id.0)
        .bind(new.owner_id.0)
        .bind(new.endpoint.as_str())
        .bind(new.p256dh.as_str())
        .bind(new.auth.as_str())
        .fetch_one(&self.writer)
        .await?;
        let kept = subscription(row);
        let created = kept.id == id;
        Ok((kept, created))
    }

    async fn list_push_subscriptions(&self, owner_id: UserId) -> Result<Vec<PushSubscription>> {
        let rows: Vec<SubscriptionRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM push_subscriptions WHERE owner_id = $1 ORDER BY id"
        ))
        .bind(owner_id.0)
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(subscription).collect())
    }

    async fn delete_push_subscription(&self, owner_id: UserId, endpoint: &str) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM push_subscriptions WHERE owner_id = $1 AND endpoint = $2")
                .bind(owner_id.0)
                .bind(endpoint)
                .execute(&self.writer)
                .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn get_push_subscription(
        &self,
        id: PushSubscriptionId,
    ) -> Result<Option<PushSubscription>> {
        let row: Option<SubscriptionRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM push_subscriptions WHERE id = $1"
        ))
        .bind(id.0)
        .fetch_optional(&self.readers)
        .await?;
        Ok(row.map(subscription))
    }

    async fn forget_push_endpoint(&self, endpoint: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM push_subscriptions WHERE endpoint = $1")
            .bind(endpoint)
            .execute(&self.writer)
            .await?;
        Ok(D::rows_affected(&done))
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
    /// Queues the news that a task ended (`task`, as `task_news` tells it; the task's
    /// `seq`-th event) for each of `subscriptions`, once each: the message id names the
    /// subscription, the task and the event.
    pub(super) async fn queue_push_news(
        conn: &mut Conn<D>,
        task_id: TaskId,
        seq: i64,
        task: &serde_json::Value,
        subscriptions: &[Uuid],
    ) -> Result<()> {
        for subscription in subscriptions {
            let id = format!("push:{subscription}:{task_id}:{seq}");
            let message = serde_json::json!({
                "subscription_id": subscription,
                "task_id": task_id,
                "status": task["status"],
                "title": task["title"],
            });
            Self::enqueue_in(conn, &id, "push", message).await?;
        }
        Ok(())
    }
}
