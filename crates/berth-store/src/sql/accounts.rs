//! Accounts of people who sign in with GitHub: users by GitHub id, web sessions, sign-in
//! states, sealed GitHub tokens and the audit log.

use async_trait::async_trait;
use berth_proto::{TokenId, UserId};
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::{Args, Column, Conn, Dialect, Row, SqlStore};
use crate::signal::EventNotice;
use crate::{Account, Accounts, AuditEntry, GithubIdentity, Principal, Result, SealedToken, User};

type AccountRow = (
    Uuid,
    String,
    Option<i64>,
    Option<String>,
    bool,
    Option<i64>,
    i64,
);

const ACCOUNT_COLUMNS: &str = "id, name, github_id, login, is_admin, disabled_at, created_at";

fn account(row: AccountRow) -> Account {
    let (id, name, github_id, login, is_admin, disabled_at, created_at) = row;
    Account {
        id: id.into(),
        name,
        github_id,
        login,
        is_admin,
        disabled_at,
        created_at,
    }
}

type AuditRow = (i64, Option<Uuid>, String, Option<Uuid>, String, i64);

#[async_trait]
impl<D: Dialect> Accounts for SqlStore<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    Uuid: Column<D::Db>,
    Option<Uuid>: Column<D::Db>,
    i64: Column<D::Db>,
    bool: Column<D::Db>,
    String: Column<D::Db>,
    Vec<u8>: Column<D::Db>,
    usize: ColumnIndex<Row<D>>,
{
    async fn upsert_github_user(
        &self,
        identity: &GithubIdentity,
        first_user_admin: bool,
    ) -> Result<Account> {
        let mut tx = self.write().await?;
        D::lock_sign_ins(&mut tx).await?;
        let existing: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM users WHERE github_id = $1")
                .bind(identity.github_id)
                .fetch_optional(&mut *tx)
                .await?;
        // The user's name is their GitHub login, unless another user (say, one made by
        // `berth token create`) has it; then `login-githubid`, which no one else can have.
        let taken: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM users WHERE name = $1 AND id IS DISTINCT FROM $2",
        )
        .bind(identity.login.as_str())
        .bind(existing)
        .fetch_one(&mut *tx)
        .await?;
        let name = match taken {
            0 => identity.login.clone(),
            _ => format!("{}-{}", identity.login, identity.github_id),
        };
        let id = match existing {
            Some(id) => {
                sqlx::query("UPDATE users SET login = $2, name = $3 WHERE id = $1")
                    .bind(id)
                    .bind(identity.login.as_str())
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                id
            }
            None => {
                let admins: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE is_admin")
                    .fetch_one(&mut *tx)
                    .await?;
                let id = UserId::new().0;
                sqlx::query(&format!(
                    "INSERT INTO users (id, name, github_id, login, is_admin, created_at) \
                     VALUES ($1, $2, $3, $5, $4, {now})",
                    now = D::NOW
                ))
                .bind(id)
                .bind(name)
                .bind(identity.github_id)
                .bind(first_user_admin && admins == 0)
                .bind(identity.login.as_str())
                .execute(&mut *tx)
                .await?;
                id
            }
        };
        let row: AccountRow = sqlx::query_as(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM users WHERE id = $1"
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(account(row))
    }

    async fn get_account(&self, user_id: UserId) -> Result<Option<Account>> {
        let row: Option<AccountRow> = sqlx::query_as(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM users WHERE id = $1"
        ))
        .bind(user_id.0)
        .fetch_optional(&self.writer)
        .await?;
        Ok(row.map(account))
    }

    async fn list_accounts(&self) -> Result<Vec<Account>> {
        let rows: Vec<AccountRow> = sqlx::query_as(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM users ORDER BY created_at, id"
        ))
        .fetch_all(&self.writer)
        .await?;
        Ok(rows.into_iter().map(account).collect())
    }

    async fn disable_user(&self, user_id: UserId) -> Result<Option<Account>> {
        let mut tx = self.write().await?;
        let done = sqlx::query(&format!(
            "UPDATE users SET disabled_at = COALESCE(disabled_at, {now}) WHERE id = $1",
            now = D::NOW
        ))
        .bind(user_id.0)
        .execute(&mut *tx)
        .await?;
        if D::rows_affected(&done) == 0 {
            return Ok(None);
        }
        sqlx::query(&format!(
            "UPDATE api_tokens SET revoked_at = {now} WHERE user_id = $1 AND revoked_at IS NULL",
            now = D::NOW
        ))
        .bind(user_id.0)
        .execute(&mut *tx)
        .await?;
        let ended = [
            "DELETE FROM web_sessions WHERE user_id = $1",
            "DELETE FROM push_subscriptions WHERE owner_id = $1",
        ];
        for statement in ended {
            sqlx::query(statement)
                .bind(user_id.0)
                .execute(&mut *tx)
                .await?;
        }
        let notice = EventNotice::user_changed(user_id);
        D::notify_account(&mut tx, notice).await?;
        tx.commit().await?;
        self.notify_subscribers(Some(notice));
        self.get_account(user_id).await
    }

    async fn insert_session(&self, user_id: UserId, session_hash: &str, ttl_ms: i64) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(&format!(
            "DELETE FROM web_sessions WHERE expires_at < {now}",
            now = D::NOW
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "INSERT INTO web_sessions (id, user_id, session_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, {now}, {now} + $4)",
            now = D::NOW
        ))
        .bind(Uuid::now_v7())
        .bind(user_id.0)
        .bind(session_hash)
        .bind(ttl_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn authenticate_session(&self, session_hash: &str) -> Result<Option<Principal>> {
        let found: Option<(Uuid, Uuid, String)> = sqlx::query_as(&format!(
            "SELECT s.id, u.id, u.name FROM web_sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.session_hash = $1 AND u.disabled_at IS NULL AND s.expires_at > {now}",
            now = D::NOW
        ))
        .bind(session_hash)
        .fetch_optional(&self.writer)
        .await?;
        Ok(found.map(|(session_id, user_id, name)| Principal {
            user: User {
                id: user_id.into(),
                name,
            },
            // A session stands where a token would; its id is in the same id space.
            token_id: TokenId::from(session_id),
        }))
    }

    async fn delete_session(&self, session_hash: &str) -> Result<()> {
        let mut tx = self.write().await?;
        let user_id: Option<Uuid> = sqlx::query_scalar(
            "DELETE FROM web_sessions WHERE session_hash = $1 RETURNING user_id",
        )
        .bind(session_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let notice = user_id.map(|id| EventNotice::user_changed(id.into()));
        if let Some(notice) = notice {
            D::notify_account(&mut tx, notice).await?;
        }
        tx.commit().await?;
        self.notify_subscribers(notice);
        Ok(())
    }

    async fn insert_sign_in_state(
        &self,
        state_hash: &str,
        verifier: &str,
        ttl_ms: i64,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(&format!(
            "DELETE FROM sign_in_states WHERE expires_at < {now}",
            now = D::NOW
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "INSERT INTO sign_in_states (state_hash, verifier, expires_at) \
             VALUES ($1, $2, {now} + $3)",
            now = D::NOW
        ))
        .bind(state_hash)
        .bind(verifier)
        .bind(ttl_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn take_sign_in_state(&self, state_hash: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(&format!(
            "DELETE FROM sign_in_states WHERE state_hash = $1 AND expires_at > {now} \
             RETURNING verifier",
            now = D::NOW
        ))
        .bind(state_hash)
        .fetch_optional(&self.writer)
        .await?)
    }

    async fn put_github_token(&self, token: &SealedToken) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO github_tokens (user_id, key_id, sealed, updated_at) \
             VALUES ($1, $2, $3, {now}) ON CONFLICT (user_id) DO UPDATE SET \
             key_id = excluded.key_id, sealed = excluded.sealed, updated_at = excluded.updated_at",
            now = D::NOW
        ))
        .bind(token.user_id.0)
        .bind(token.key_id.as_str())
        .bind(&token.sealed)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn get_github_token(&self, user_id: UserId) -> Result<Option<SealedToken>> {
        let row: Option<(String, Vec<u8>)> =
            sqlx::query_as("SELECT key_id, sealed FROM github_tokens WHERE user_id = $1")
                .bind(user_id.0)
                .fetch_optional(&self.writer)
                .await?;
        Ok(row.map(|(key_id, sealed)| SealedToken {
            user_id,
            key_id,
            sealed,
        }))
    }

    async fn list_github_tokens(&self) -> Result<Vec<SealedToken>> {
        let rows: Vec<(Uuid, String, Vec<u8>)> =
            sqlx::query_as("SELECT user_id, key_id, sealed FROM github_tokens ORDER BY user_id")
                .fetch_all(&self.writer)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(user_id, key_id, sealed)| SealedToken {
                user_id: user_id.into(),
                key_id,
                sealed,
            })
            .collect())
    }

    async fn append_audit(
        &self,
        actor_id: Option<UserId>,
        action: &str,
        subject_id: Option<UserId>,
        detail: serde_json::Value,
    ) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO audit_log (actor_id, action, subject_id, detail, created_at) \
             VALUES ($1, $2, $3, $4, {now})",
            now = D::NOW
        ))
        .bind(actor_id.map(|id| id.0))
        .bind(action)
        .bind(subject_id.map(|id| id.0))
        .bind(detail.to_string())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn list_audit(&self, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT seq, actor_id, action, subject_id, detail, created_at FROM audit_log \
             ORDER BY seq DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.writer)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(seq, actor_id, action, subject_id, detail, created_at)| AuditEntry {
                    seq,
                    actor_id: actor_id.map(Into::into),
                    action,
                    subject_id: subject_id.map(Into::into),
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                    created_at,
                },
            )
            .collect())
    }
}
