//! Prepared environments per runner node and cache key, and users' sealed setup secrets per
//! repository.

use async_trait::async_trait;
use berth_proto::UserId;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::{Args, Column, Conn, Dialect, Row, SqlStore};
use crate::{EnvironmentRecord, Environments, Result, SealedToken, SetupSecret};

type EnvironmentRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
);

const COLUMNS: &str =
    "node_id, cache_key, repo_url, image, state, log, size_bytes, last_used, created_at";

fn record(
    (node_id, key, repo_url, image, state, log, size_bytes, last_used, created_at): EnvironmentRow,
) -> EnvironmentRecord {
    EnvironmentRecord {
        node_id,
        key,
        repo_url,
        image,
        state,
        log,
        size_bytes,
        last_used,
        created_at,
    }
}

#[async_trait]
impl<D: Dialect> Environments for SqlStore<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    Uuid: Column<D::Db>,
    i64: Column<D::Db>,
    String: Column<D::Db>,
    Vec<u8>: Column<D::Db>,
    usize: ColumnIndex<Row<D>>,
{
    async fn put_environment(&self, record: &EnvironmentRecord) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO environments ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, {now}, {now}) \
             ON CONFLICT (node_id, cache_key) DO UPDATE SET repo_url = excluded.repo_url, \
             image = excluded.image, state = excluded.state, log = excluded.log, \
             size_bytes = excluded.size_bytes, last_used = excluded.last_used",
            now = D::NOW
        ))
        .bind(record.node_id.as_str())
        .bind(record.key.as_str())
        .bind(record.repo_url.as_str())
        .bind(record.image.as_str())
        .bind(record.state.as_str())
        .bind(record.log.as_str())
        .bind(record.size_bytes)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn list_environments(&self, repo_url: &str) -> Result<Vec<EnvironmentRecord>> {
        let rows: Vec<EnvironmentRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM environments WHERE repo_url = $1 \
             ORDER BY last_used DESC, node_id"
        ))
        .bind(repo_url)
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(record).collect())
    }

    async fn get_environment(&self, key: &str) -> Result<Vec<EnvironmentRecord>> {
        let rows: Vec<EnvironmentRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM environments WHERE cache_key = $1 ORDER BY node_id"
        ))
        .bind(key)
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(record).collect())
    }

    async fn mark_environment_stale(&self, key: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE environments SET state = 'stale' WHERE cache_key = $1")
            .bind(key)
            .execute(&self.writer)
            .await?;
        Ok(D::rows_affected(&done) > 0)
    }

    async fn delete_environment(&self, node_id: &str, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM environments WHERE node_id = $1 AND cache_key = $2")
            .bind(node_id)
            .bind(key)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn has_task_on_repo(&self, owner_id: UserId, repo_url: &str) -> Result<bool> {
        // COUNT is a 64-bit integer on both databases, where a literal 1 is not.
        let (found,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM (SELECT 1 FROM tasks WHERE owner_id = $1 AND repo_url = $2 \
             LIMIT 1) AS found",
        )
        .bind(owner_id.0)
        .bind(repo_url)
        .fetch_one(&self.readers)
        .await?;
        Ok(found > 0)
    }

    async fn put_setup_secret(&self, secret: &SetupSecret) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO setup_secrets (owner_id, repo_url, name, key_id, sealed, updated_at) \
             VALUES ($1, $2, $3, $4, $5, {now}) ON CONFLICT (owner_id, repo_url, name) \
             DO UPDATE SET key_id = excluded.key_id, sealed = excluded.sealed, \
             updated_at = excluded.updated_at",
            now = D::NOW
        ))
        .bind(secret.sealed.user_id.0)
        .bind(secret.repo_url.as_str())
        .bind(secret.name.as_str())
        .bind(secret.sealed.key_id.as_str())
        .bind(&secret.sealed.sealed)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn list_setup_secrets(
        &self,
        owner_id: UserId,
        repo_url: &str,
    ) -> Result<Vec<SetupSecret>> {
        let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT name, key_id, sealed FROM setup_secrets \
             WHERE owner_id = $1 AND repo_url = $2 ORDER BY name",
        )
        .bind(owner_id.0)
        .bind(repo_url)
        .fetch_all(&self.readers)
        .await?;
        let secret = |(name, key_id, sealed)| SetupSecret {
            repo_url: repo_url.to_string(),
            name,
            sealed: SealedToken {
                user_id: owner_id,
                key_id,
                sealed,
            },
        };
        Ok(rows.into_iter().map(secret).collect())
    }

    async fn list_all_setup_secrets(&self) -> Result<Vec<SetupSecret>> {
        let rows: Vec<(Uuid, String, String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT owner_id, repo_url, name, key_id, sealed FROM setup_secrets \
             ORDER BY owner_id, repo_url, name",
        )
        .fetch_all(&self.readers)
        .await?;
        let secret = |(owner_id, repo_url, name, key_id, sealed): (Uuid, _, _, _, _)| SetupSecret {
            repo_url,
            name,
            sealed: SealedToken {
                user_id: owner_id.into(),
                key_id,
                sealed,
            },
        };
        Ok(rows.into_iter().map(secret).collect())
    }

    async fn delete_setup_secret(
        &self,
        owner_id: UserId,
        repo_url: &str,
        name: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM setup_secrets WHERE owner_id = $1 AND repo_url = $2 AND name = $3",
        )
        .bind(owner_id.0)
        .bind(repo_url)
        .bind(name)
        .execute(&self.writer)
        .await?;
        Ok(D::rows_affected(&done) > 0)
    }
}
