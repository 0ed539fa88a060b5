//! Users, API tokens and stream tickets on PostgreSQL.

use berth_proto::{TokenId, TokenInfo, UserId};

use super::PostgresStore;
use crate::rows::{token_columns, TokenRow};
use crate::{NewToken, Principal, Result, User};

impl PostgresStore {
    pub(super) async fn upsert_user_(&self, name: &str) -> Result<User> {
        let mut tx = self.write().await?;
        sqlx::query(concat!(
            "INSERT INTO users (id, name, created_at) VALUES ($1, $2, ",
            now!(),
            ")",
            " ON CONFLICT (name) DO NOTHING"
        ))
        .bind(UserId::new().0)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        let (id,): (uuid::Uuid,) = sqlx::query_as("SELECT id FROM users WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(User {
            id: id.into(),
            name: name.to_string(),
        })
    }

    pub(super) async fn count_users_(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?)
    }

    pub(super) async fn insert_token_(&self, token: NewToken) -> Result<TokenInfo> {
        let row: TokenRow = sqlx::query_as(concat!(
            "INSERT INTO api_tokens (id, user_id, name, prefix, token_hash, created_at)",
            " VALUES ($1, $2, $3, $4, $5, ",
            now!(),
            ") RETURNING ",
            token_columns!()
        ))
        .bind(TokenId::new().0)
        .bind(token.user_id.0)
        .bind(&token.name)
        .bind(&token.prefix)
        .bind(&token.token_hash)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.into())
    }

    pub(super) async fn authenticate_(&self, token_hash: &str) -> Result<Option<Principal>> {
        let found: Option<(uuid::Uuid, uuid::Uuid, String, Option<i64>, i64)> =
            sqlx::query_as(concat!(
                "SELECT t.id, u.id, u.name, t.last_used_at, ",
                now!(),
                " FROM api_tokens t JOIN users u ON u.id = t.user_id",
                " WHERE t.token_hash = $1 AND t.revoked_at IS NULL"
            ))
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        let Some((token_id, user_id, name, last_used, now)) = found else {
            return Ok(None);
        };
        // Record use at most once a minute, so reads do not all become writes.
        if last_used.is_none_or(|at| now - at > 60_000) {
            sqlx::query(concat!(
                "UPDATE api_tokens SET last_used_at = ",
                now!(),
                " WHERE id = $1"
            ))
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        }
        Ok(Some(Principal {
            user: User {
                id: user_id.into(),
                name,
            },
            token_id: token_id.into(),
        }))
    }

    pub(super) async fn list_tokens_(&self, user_id: UserId) -> Result<Vec<TokenInfo>> {
        let rows: Vec<TokenRow> = sqlx::query_as(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens WHERE user_id = $1 ORDER BY id DESC"
        ))
        .bind(user_id.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(TokenInfo::from).collect())
    }

    pub(super) async fn revoke_token_(
        &self,
        user_id: UserId,
        id: TokenId,
    ) -> Result<Option<TokenInfo>> {
        let row: Option<TokenRow> = sqlx::query_as(concat!(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ",
            now!(),
            ")",
            " WHERE id = $1 AND user_id = $2 RETURNING ",
            token_columns!()
        ))
        .bind(id.0)
        .bind(user_id.0)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(TokenInfo::from))
    }

    pub(super) async fn insert_stream_ticket_(
        &self,
        user_id: UserId,
        ticket_hash: &str,
        ttl_ms: i64,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(concat!(
            "DELETE FROM stream_tickets WHERE expires_at < ",
            now!()
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(concat!(
            "INSERT INTO stream_tickets (ticket_hash, user_id, expires_at)",
            " VALUES ($1, $2, ",
            now!(),
            " + $3)"
        ))
        .bind(ticket_hash)
        .bind(user_id.0)
        .bind(ttl_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn redeem_stream_ticket_(&self, ticket_hash: &str) -> Result<Option<User>> {
        let mut tx = self.write().await?;
        let user_id: Option<uuid::Uuid> = sqlx::query_scalar(concat!(
            "DELETE FROM stream_tickets WHERE ticket_hash = $1 AND expires_at >= ",
            now!(),
            " RETURNING user_id"
        ))
        .bind(ticket_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let user = match user_id {
            None => None,
            Some(id) => {
                let name: String = sqlx::query_scalar("SELECT name FROM users WHERE id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                Some(User {
                    id: id.into(),
                    name,
                })
            }
        };
        tx.commit().await?;
        Ok(user)
    }
}
