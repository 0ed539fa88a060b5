//! Users' webhook endpoints. Removing one marks it deleted: messages already queued for it
//! are then dropped by the sender, and no new ones are queued.

use async_trait::async_trait;
use berth_proto::{UserId, WebhookId};
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::{Args, Column, Conn, Dialect, Row, SqlStore};
use crate::{NewWebhook, Result, WebhookEndpoint, Webhooks};

type EndpointRow = (Uuid, Uuid, String, String, String, i64);

const COLUMNS: &str = "id, owner_id, url, secret, format, created_at";

fn endpoint((id, owner_id, url, secret, format, created_at): EndpointRow) -> WebhookEndpoint {
    WebhookEndpoint {
        id: id.into(),
        owner_id: owner_id.into(),
        url,
        secret,
        format,
        created_at,
    }
}

#[async_trait]
impl<D: Dialect> Webhooks for SqlStore<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    Uuid: Column<D::Db>,
    i64: Column<D::Db>,
    String: Column<D::Db>,
    usize: ColumnIndex<Row<D>>,
{
    async fn create_webhook(&self, new: NewWebhook) -> Result<WebhookEndpoint> {
        let row: EndpointRow = sqlx::query_as(&format!(
            "INSERT INTO webhook_endpoints (id, owner_id, url, secret, format, created_at) \
             VALUES ($1, $2, $3, $4, $5, {now}) RETURNING {COLUMNS}",
            now = D::NOW
        ))
        .bind(WebhookId::new().0)
        .bind(new.owner_id.0)
        .bind(new.url.as_str())
        .bind(new.secret.as_str())
        .bind(new.format.as_str())
        .fetch_one(&self.writer)
        .await?;
        Ok(endpoint(row))
    }

    async fn list_webhooks(&self, owner_id: UserId) -> Result<Vec<WebhookEndpoint>> {
        let rows: Vec<EndpointRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM webhook_endpoints WHERE owner_id = $1 AND deleted_at IS NULL \
             ORDER BY id"
        ))
        .bind(owner_id.0)
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(endpoint).collect())
    }

    async fn delete_webhook(&self, owner_id: UserId, id: WebhookId) -> Result<bool> {
        let done = sqlx::query(&format!(
            "UPDATE webhook_endpoints SET deleted_at = {now} \
             WHERE id = $1 AND owner_id = $2 AND deleted_at IS NULL",
            now = D::NOW
        ))
        .bind(id.0)
        .bind(owner_id.0)
        .execute(&self.writer)
        .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn get_webhook(&self, id: WebhookId) -> Result<Option<WebhookEndpoint>> {
        let row: Option<EndpointRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1 AND deleted_at IS NULL"
        ))
        .bind(id.0)
        .fetch_optional(&self.readers)
        .await?;
        Ok(row.map(endpoint))
    }
}
