//! Accounts on SQLite: GitHub users, web sessions, sign-in states, sealed GitHub tokens and
//! the audit log.

use berth_proto::{TokenId, UserId};

use super::SqliteStore;
use crate::{Account, AuditEntry, GithubIdentity, Principal, Result, SealedToken, User};

type AccountRow = (
    uuid::Uuid,
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

type AuditRow = (
    i64,
    Option<uuid::Uuid>,
    String,
    Option<uuid::Uuid>,
    String,
    i64,
);

/// The user's name: their GitHub login, unless another user (say, one made by
/// `berth token create`) has it; then `login-githubid`, which no one else can have.
async fn free_name(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    identity: &GithubIdentity,
    own_id: Option<uuid::Uuid>,
) -> Result<String> {
    let taken: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE name = $1 AND id IS NOT $2")
            .bind(&identity.login)
            .bind(own_id)
            .fetch_one(&mut **tx)
            .await?;
    Ok(match taken {
        0 => identity.login.clone(),
        _ => format!("{}-{}", identity.login, identity.github_id),
    })
}

impl SqliteStore {
    pub(super) async fn upsert_github_user_(
        &self,
        identity: &GithubIdentity,
        first_user_admin: bool,
    ) -> Result<Account> {
        let mut tx = self.write().await?;
        let existing: Option<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM users WHERE github_id = $1")
                .bind(identity.github_id)
                .fetch_optional(&mut *tx)
                .await?;
        let id = match existing {
            Some(id) => {
                let name = free_name(&mut tx, identity, Some(id)).await?;
                sqlx::query("UPDATE users SET login = $2, name = $3 WHERE id = $1")
                    .bind(id)
                    .bind(&identity.login)
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
                let name = free_name(&mut tx, identity, None).await?;
                sqlx::query(concat!(
                    "INSERT INTO users (id, name, github_id, login, is_admin, created_at)",
                    " VALUES ($1, $2, $3, $5, $4, ",
                    now!(),
                    ")"
                ))
                .bind(id)
                .bind(name)
                .bind(identity.github_id)
                .bind(first_user_admin && admins == 0)
                .bind(&identity.login)
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

    pub(super) async fn get_account_(&self, user_id: UserId) -> Result<Option<Account>> {
        let row: Option<AccountRow> = sqlx::query_as(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM users WHERE id = $1"
        ))
        .bind(user_id.0)
        .fetch_optional(&self.writer)
        .await?;
        Ok(row.map(account))
    }

    pub(super) async fn list_accounts_(&self) -> Result<Vec<Account>> {
        let rows: Vec<AccountRow> = sqlx::query_as(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM users ORDER BY created_at, id"
        ))
        .fetch_all(&self.writer)
        .await?;
        Ok(rows.into_iter().map(account).collect())
    }

    pub(super) async fn disable_user_(&self, user_id: UserId) -> Result<Option<Account>> {
        let mut tx = self.write().await?;
        let done = sqlx::query(concat!(
            "UPDATE users SET disabled_at = COALESCE(disabled_at, ",
            now!(),
            ") WHERE id = $1"
        ))
        .bind(user_id.0)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        sqlx::query(concat!(
            "UPDATE api_tokens SET revoked_at = ",
            now!(),
            " WHERE user_id = $1 AND revoked_at IS NULL"
        ))
        .bind(user_id.0)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM web_sessions WHERE user_id = $1")
            .bind(user_id.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.signals
            .event_appended(crate::EventNotice::user_changed(user_id));
        self.get_account_(user_id).await
    }

    pub(super) async fn insert_session_(
        &self,
        user_id: UserId,
        session_hash: &str,
        ttl_ms: i64,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(concat!(
            "DELETE FROM web_sessions WHERE expires_at < ",
            now!()
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(concat!(
            "INSERT INTO web_sessions (id, user_id, session_hash, created_at, expires_at)",
            " VALUES ($1, $2, $3, ",
            now!(),
            ", ",
            now!(),
            " + $4)"
        ))
        .bind(uuid::Uuid::now_v7())
        .bind(user_id.0)
        .bind(session_hash)
        .bind(ttl_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn authenticate_session_(
        &self,
        session_hash: &str,
    ) -> Result<Option<Principal>> {
        let found: Option<(uuid::Uuid, uuid::Uuid, String)> = sqlx::query_as(concat!(
            "SELECT s.id, u.id, u.name FROM web_sessions s JOIN users u ON u.id = s.user_id",
            " WHERE s.session_hash = $1 AND u.disabled_at IS NULL AND s.expires_at > ",
            now!()
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

    pub(super) async fn delete_session_(&self, session_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM web_sessions WHERE session_hash = $1")
            .bind(session_hash)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub(super) async fn insert_sign_in_state_(
        &self,
        state_hash: &str,
        verifier: &str,
        ttl_ms: i64,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(concat!(
            "DELETE FROM sign_in_states WHERE expires_at < ",
            now!()
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(concat!(
            "INSERT INTO sign_in_states (state_hash, verifier, expires_at) VALUES ($1, $2, ",
            now!(),
            " + $3)"
        ))
        .bind(state_hash)
        .bind(verifier)
        .bind(ttl_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn take_sign_in_state_(&self, state_hash: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(concat!(
            "DELETE FROM sign_in_states WHERE state_hash = $1 AND expires_at > ",
            now!(),
            " RETURNING verifier"
        ))
        .bind(state_hash)
        .fetch_optional(&self.writer)
        .await?)
    }

    pub(super) async fn put_github_token_(&self, token: &SealedToken) -> Result<()> {
        sqlx::query(concat!(
            "INSERT INTO github_tokens (user_id, key_id, sealed, updated_at) VALUES ($1, $2, $3, ",
            now!(),
            ") ON CONFLICT (user_id) DO UPDATE SET key_id = excluded.key_id,",
            " sealed = excluded.sealed, updated_at = excluded.updated_at"
        ))
        .bind(token.user_id.0)
        .bind(&token.key_id)
        .bind(&token.sealed)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(super) async fn get_github_token_(&self, user_id: UserId) -> Result<Option<SealedToken>> {
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

    pub(super) async fn list_github_tokens_(&self) -> Result<Vec<SealedToken>> {
        let rows: Vec<(uuid::Uuid, String, Vec<u8>)> =
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

    pub(super) async fn append_audit_(
        &self,
        actor_id: Option<UserId>,
        action: &str,
        subject_id: Option<UserId>,
        detail: serde_json::Value,
    ) -> Result<()> {
        sqlx::query(concat!(
            "INSERT INTO audit_log (actor_id, action, subject_id, detail, created_at)",
            " VALUES ($1, $2, $3, $4, ",
            now!(),
            ")"
        ))
        .bind(actor_id.map(|id| id.0))
        .bind(action)
        .bind(subject_id.map(|id| id.0))
        .bind(detail.to_string())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub(super) async fn list_audit_(&self, limit: i64) -> Result<Vec<AuditEntry>> {
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
