//! Berth's storage: one `Store`, made of role traits (`Tasks`, `Events`, `Queue`,
//! `Transcript`, `Tokens`, `Accounts`, `Outbox`, `GithubTasks`, `Webhooks`,
//! `PushSubscriptions`), implemented once in SQL for SQLite (one machine, no setup) and
//! PostgreSQL (many machines). Each database runs its own embedded migrations when it opens.

mod model;
mod roles;
mod rows;
pub mod sealing;
mod signal;
mod sql;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use berth_proto::TaskId;

pub use model::{
    Account, AuditEntry, ClaimLimits, Created, EnvironmentRecord, Fence, GithubIdentity,
    GithubLink, GithubOrigin, NewFollowUp, NewGithubDelivery, NewPushSubscription, NewTask,
    NewToken, NewWebhook, OutboxMessage, Principal, PushSubscription, Released, SealedToken,
    SetupSecret, TaskEnd, TaskQuery, User, WebhookEndpoint, WorkState,
};
pub use roles::{
    Accounts, Environments, Events, GithubTasks, Outbox, PushSubscriptions, Queue, Tasks, Tokens,
    Transcript, Webhooks,
};
pub use signal::{EventNotice, TextDelta};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The same idempotency key was used earlier for a different request.
    #[error("idempotency key was already used for a different request")]
    IdempotencyMismatch,
    /// A write carried an attempt number that no longer owns the task.
    #[error("task {0} is no longer held by this attempt")]
    Fenced(TaskId),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The TLS handshake with PostgreSQL failed: an untrusted or mismatched certificate, an
    /// unreadable CA file, or a server without TLS under `sslmode=require` or stricter.
    #[error(
        "TLS to PostgreSQL failed: {0}. Check sslmode and sslrootcert in the database URL \
         (docs/deploy.md, \"TLS to PostgreSQL\")"
    )]
    Tls(String),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A newer Berth has migrated the database past what this binary knows: running on it
    /// could misread or corrupt what the newer version stored.
    #[error(
        "the database was migrated by a newer version of Berth (it is at schema version \
         {found}; this binary knows versions up to {known}). Run the newer berth binary, or \
         restore the backup taken before the upgrade (docs/operations.md)"
    )]
    NewerSchema { found: i64, known: i64 },
    /// The request does not fit the task's state (such as a follow-up on a running task).
    #[error("{0}")]
    Conflict(String),
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
}

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The whole store: every role, and what concerns the database itself.
#[async_trait]
pub trait Store:
    Tasks
    + Events
    + Queue
    + Transcript
    + Tokens
    + Accounts
    + Outbox
    + GithubTasks
    + Webhooks
    + PushSubscriptions
    + Environments
    + Send
    + Sync
    + 'static
{
    fn backend(&self) -> Backend;
    /// This installation's id, made with its database: everything Berth creates in Docker
    /// carries it, so that a sweep never touches another installation's containers.
    fn installation_id(&self) -> &str;
    /// Checks that the database answers.
    async fn ping(&self) -> Result<()>;
    /// Waits for open connections to finish and closes them.
    async fn close(&self);

    /// Changes whenever a task may have become claimable (created, requeued), here or, on
    /// PostgreSQL, on another node. Runners still poll: this only makes them quick.
    fn work_signal(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Every event appended from now on, here or (PostgreSQL) on another node. A lagging
    /// receiver loses notices, not events: re-read the log from the last sequence seen.
    fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<EventNotice>;

    /// Hands text the model is writing to the task's streams, here and (PostgreSQL) on other
    /// nodes, without storing it. On SQLite it reaches only this process.
    async fn publish_text_delta(&self, delta: TextDelta) -> Result<()>;
    /// Text deltas published from now on; a lagging receiver loses some, as streams may.
    fn subscribe_text_deltas(&self) -> tokio::sync::broadcast::Receiver<Arc<TextDelta>>;
}

/// Runs `migrator` on the database, unless a newer Berth has migrated it further.
async fn migrate<'a, A>(migrator: &sqlx::migrate::Migrator, pool: A) -> Result<()>
where
    A: sqlx::Acquire<'a>,
    <A::Connection as std::ops::Deref>::Target: sqlx::migrate::Migrate,
{
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match migrator.run(pool).await {
        // sqlx's word for "applied here, but unknown to this binary".
        Err(sqlx::migrate::MigrateError::VersionMissing(found)) => {
            Err(StoreError::NewerSchema { found, known })
        }
        done => Ok(done?),
    }
}

/// Opens the store a database URL names: `postgres://…` or `postgresql://…` for PostgreSQL;
/// anything else is refused. Use [`open_sqlite`] for the default data directory.
pub async fn open_url(url: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(sql::postgres::connect(url).await?))
}

/// Writes a consistent copy of the SQLite database in `data_dir` to the new file `to`, while
/// the server may be running (SQLite's `VACUUM INTO`: one read transaction, a snapshot).
pub async fn backup_sqlite(data_dir: &Path, to: &Path) -> Result<()> {
    sql::sqlite::backup(&data_dir.join("berth.db"), to).await
}

/// Opens (creating if needed) the SQLite database `berth.db` in `data_dir`.
pub async fn open_sqlite(data_dir: &Path) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(
        sql::sqlite::open(&data_dir.join("berth.db")).await?,
    ))
}
