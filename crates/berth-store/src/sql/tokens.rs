//! Users as API tokens know them, their tokens (only hashes are stored), and the single-use
//! tickets browsers open streams with.

use async_trait::async_trait;
use berth_proto::{TokenId, TokenInfo, UserId};
use sqlx::{ColumnIndex, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::{Args, Column, Conn, Dialect, Row, SqlStore};
use crate::rows::{token_columns, TokenRow};
use crate::signal::EventNotice;
use crate::{NewToken, Principal, Result, Tokens, User};

#[async_trait]
impl<D: Dialect> Tokens for SqlStore<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    Uuid: Column<D::Db>,
    i64: Column<D::Db>,
    String: Column<D::Db>,
    usize: ColumnIndex<Row<D>>,
    for<'r> TokenRow: FromRow<'r, Row<D>>,
{
    async fn upsert_user(&self, name: &str) -> Result<User> {
        let mut tx = self.write().await?;
        sqlx::query(&format!(
            "INSERT INTO users (id, name, created_at) VALUES ($1, $2, {now}) \
             ON CONFLICT (name) DO NOTHING",
            now = D::NOW
        ))
        .bind(UserId::new().0)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        let (id,): (Uuid,) = sqlx::query_as("SELECT id FROM users WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(User {
            id: id.into(),
            name: name.to_string(),
        })
    }

    async fn count_users(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.readers)
            .await?)
    }

    async fn insert_token(&self, token: NewToken) -> Result<TokenInfo> {
        let row: TokenRow = sqlx::query_as(&format!(
            "INSERT INTO api_tokens (id, user_id, name, prefix, token_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, {now}) RETURNING {columns}",
            now = D::NOW,
            columns = token_columns!()
        ))
        .bind(TokenId::new().0)
        .bind(token.user_id.0)
        .bind(token.name.as_str())
        .bind(token.prefix.as_str())
        .bind(token.token_hash.as_str())
        .fetch_one(&self.writer)
        .await?;
        Ok(row.into())
    }

    async fn authenticate(&self, token_hash: &str) -> Result<Option<Principal>> {
        let found: Option<(Uuid, Uuid, String, Option<i64>, i64)> = sqlx::query_as(&format!(
            "SELECT t.id, u.id, u.name, t.last_used_at, {now} \
             FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL",
            now = D::NOW
        ))
        .bind(token_hash)
        .fetch_optional(&self.readers)
        .await?;
        let Some((token_id, user_id, name, last_used, now)) = found else {
            return Ok(None);
        };
        // Record use at most once a minute, so reads do not all become writes.
        if last_used.is_none_or(|at| now - at > 60_000) {
            sqlx::query(&format!(
                "UPDATE api_tokens SET last_used_at = {now} WHERE id = $1",
                now = D::NOW
            ))
            .bind(token_id)
            .execute(&self.writer)
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

    async fn list_tokens(&self, user_id: UserId) -> Result<Vec<TokenInfo>> {
        let rows: Vec<TokenRow> = sqlx::query_as(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens WHERE user_id = $1 ORDER BY id DESC"
        ))
        .bind(user_id.0)
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(TokenInfo::from).collect())
    }

    async fn revoke_token(&self, user_id: UserId, id: TokenId) -> Result<Option<TokenInfo>> {
        let mut tx = self.write().await?;
        let row: Option<TokenRow> = sqlx::query_as(&format!(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, {now}) \
             WHERE id = $1 AND user_id = $2 RETURNING {columns}",
            now = D::NOW,
            columns = token_columns!()
        ))
        .bind(id.0)
        .bind(user_id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let notice = EventNotice::user_changed(user_id);
        if row.is_some() {
            D::notify_account(&mut tx, notice).await?;
        }
        tx.commit().await?;
        if row.is_some() {
            self.notify_subscribers(Some(notice));
        }
        Ok(row.map(TokenInfo::from))
    }

    async fn still_valid(&self, principal: &Principal) -> Result<bool> {
        let valid: Option<Uuid> = sqlx::query_scalar(&format!(
            "SELECT u.id FROM users u WHERE u.id = $2 AND u.disabled_at IS NULL AND (\
               EXISTS (SELECT 1 FROM api_tokens t WHERE t.id = $1 AND t.user_id = u.id \
                       AND t.revoked_at IS NULL) \
               OR EXISTS (SELECT 1 FROM web_sessions s WHERE s.id = $1 AND s.user_id = u.id \
                          AND s.expires_at > {now}))",
            now = D::NOW
        ))
        .bind(principal.token_id.0)
        .bind(principal.user.id.0)
        .fetch_optional(&self.readers)
        .await?;
        Ok(valid.is_some())
    }

    async fn insert_stream_ticket(
        &self,
        principal: &Principal,
        ticket_hash: &str,
        ttl_ms: i64,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(&format!(
            "DELETE FROM stream_tickets WHERE expires_at < {now}",
            now = D::NOW
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "INSERT INTO stream_tickets (ticket_hash, user_id, credential_id, expires_at) \
             VALUES ($1, $2, $3, {now} + $4)",
            now = D::NOW
        ))
        .bind(ticket_hash)
        .bind(principal.user.id.0)
        .bind(principal.token_id.0)
        .bind(ttl_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn redeem_stream_ticket(&self, ticket_hash: &str) -> Result<Option<Principal>> {
        let mut tx = self.write().await?;
        // A ticket made before tickets named their credential is not honoured: it would
        // open a stream that no revocation could close.
        let redeemed: Option<(Uuid, Option<Uuid>)> = sqlx::query_as(&format!(
            "DELETE FROM stream_tickets WHERE ticket_hash = $1 AND expires_at >= {now} \
             RETURNING user_id, credential_id",
            now = D::NOW
        ))
        .bind(ticket_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let principal = match redeemed {
            Some((user_id, Some(credential))) => {
                let name: String = sqlx::query_scalar("SELECT name FROM users WHERE id = $1")
                    .bind(user_id)
                    .fetch_one(&mut *tx)
                    .await?;
                let user = User {
                    id: user_id.into(),
                    name,
                };
                Some(Principal {
                    user,
                    token_id: TokenId::from(credential),
                })
            }
            _ => None,
        };
        tx.commit().await?;
        Ok(principal)
    }
}
