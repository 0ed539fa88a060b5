//! GitHub as a front door: each delivery is recorded once (by its id and by its body) and
//! queued for the API's GitHub worker in the same transaction; tasks started from GitHub (linked
//! to their issue as they are created, in sql/tasks.rs) are found by their link and their pull
//! request, and remember Berth's comment there.

use async_trait::async_trait;
use berth_proto::TaskId;
use sqlx::types::Json;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::{Args, Column, Conn, Dialect, Row, SqlStore};
use crate::{GithubLink, GithubTasks, NewGithubDelivery, Result};

type LinkRow = (Uuid, Uuid, i64, String, i64, Option<i64>);

const LINK_COLUMNS: &str =
    "g.task_id, t.owner_id, g.installation_id, g.repository, g.issue_number, g.comment_id";

fn link(
    (task_id, owner_id, installation_id, repository, issue_number, comment_id): LinkRow,
) -> GithubLink {
    GithubLink {
        task_id: task_id.into(),
        owner_id: owner_id.into(),
        installation_id,
        repository,
        issue_number,
        comment_id,
    }
}

#[async_trait]
impl<D: Dialect> GithubTasks for SqlStore<D>
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
    async fn record_github_delivery(&self, delivery: NewGithubDelivery) -> Result<bool> {
        let mut tx = self.write().await?;
        let seen: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM github_deliveries WHERE delivery_id = $1 OR body_sha256 = $2",
        )
        .bind(delivery.delivery_id.as_str())
        .bind(delivery.body_sha256.as_str())
        .fetch_one(&mut *tx)
        .await?;
        if seen > 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        // Two nodes taking the same delivery at once: the second insert conflicts, and its
        // transaction (and queued message) is undone.
        let inserted = sqlx::query(&format!(
            "INSERT INTO github_deliveries (delivery_id, body_sha256, event, received_at) \
             VALUES ($1, $2, $3, {now}) ON CONFLICT DO NOTHING",
            now = D::NOW
        ))
        .bind(delivery.delivery_id.as_str())
        .bind(delivery.body_sha256.as_str())
        .bind(delivery.event.as_str())
        .execute(&mut *tx)
        .await?;
        if D::rows_affected(&inserted) == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let message = serde_json::json!({
            "kind": "delivery",
            "delivery_id": delivery.delivery_id,
            "event": delivery.event,
            "payload": delivery.payload,
        });
        let id = format!("github:{}", delivery.delivery_id);
        Self::enqueue_in(&mut tx, &id, "github", message).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn forget_github_deliveries(&self, age_ms: i64) -> Result<u64> {
        let done = sqlx::query(&format!(
            "DELETE FROM github_deliveries WHERE received_at < {now} - $1",
            now = D::NOW
        ))
        .bind(age_ms)
        .execute(&self.writer)
        .await?;
        Ok(D::rows_affected(&done))
    }

    async fn github_link(&self, task_id: TaskId) -> Result<Option<GithubLink>> {
        let row: Option<LinkRow> = sqlx::query_as(&format!(
            "SELECT {LINK_COLUMNS} FROM github_tasks g JOIN tasks t ON t.id = g.task_id \
             WHERE g.task_id = $1"
        ))
        .bind(task_id.0)
        .fetch_optional(&self.readers)
        .await?;
        Ok(row.map(link))
    }

    async fn github_task_by_pull_request(
        &self,
        pull_request_url: &str,
    ) -> Result<Option<GithubLink>> {
        let row: Option<LinkRow> = sqlx::query_as(&format!(
            "SELECT {LINK_COLUMNS} FROM github_tasks g JOIN tasks t ON t.id = g.task_id \
             WHERE t.pull_request_url = $1 ORDER BY g.task_id LIMIT 1"
        ))
        .bind(pull_request_url)
        .fetch_optional(&self.readers)
        .await?;
        Ok(row.map(link))
    }

    async fn set_github_comment(&self, task_id: TaskId, comment_id: i64) -> Result<()> {
        sqlx::query("UPDATE github_tasks SET comment_id = $2 WHERE task_id = $1")
            .bind(task_id.0)
            .bind(comment_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
