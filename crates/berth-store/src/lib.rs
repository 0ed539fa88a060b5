//! Berth's storage: one `Store` trait, implemented on SQLite (one machine, no setup) and on
//! PostgreSQL (many machines). Each backend runs its own embedded migrations when it opens.

mod postgres;
mod rows;
mod signal;
mod sqlite;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use berth_proto::{Event, EventKind, Task, TaskId, TaskStatus, TokenId, TokenInfo, UserId};

pub use postgres::PostgresStore;
pub use signal::EventNotice;
pub use sqlite::SqliteStore;

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
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The request does not fit the task's state (such as a follow-up on a running task).
    #[error("{0}")]
    Conflict(String),
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
}

/// A user account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: String,
}

/// Who a request comes from, once its token is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user: User,
    pub token_id: TokenId,
}

/// A token to store: only its hash, never the secret.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub user_id: UserId,
    pub name: String,
    pub prefix: String,
    pub token_hash: String,
}

/// A task to enqueue, already validated.
#[derive(Clone, Debug)]
pub struct NewTask {
    pub owner_id: UserId,
    pub request: berth_proto::CreateTask,
    pub max_attempts: i64,
    /// `(key, hash of the request body)` when the client sent an `Idempotency-Key`.
    pub idempotency: Option<(String, String)>,
}

/// A follow-up to queue on a task that has ended, already validated.
#[derive(Clone, Debug)]
pub struct NewFollowUp {
    pub prompt: String,
    /// Attempts this follow-up may take.
    pub max_attempts: i64,
    /// `(key, hash of the request body)` when the client sent an `Idempotency-Key`.
    pub idempotency: Option<(String, String)>,
}

/// Whether `create_task` made a new task (or `continue_task` queued the follow-up), or found
/// what an earlier request with the same idempotency key did.
#[derive(Clone, Debug)]
pub struct Created {
    pub task: Task,
    pub created: bool,
}

/// A filter and a position for listing a user's tasks, newest first.
#[derive(Clone, Debug, Default)]
pub struct TaskQuery {
    pub status: Option<TaskStatus>,
    /// Only tasks older than this one.
    pub before: Option<TaskId>,
    pub limit: i64,
}

/// The identity of one attempt at a task; every write a runner makes carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    pub task_id: TaskId,
    pub attempt: i64,
}

/// What a runner may take: the claim respects these counts, read from the task rows
/// themselves inside the claim.
#[derive(Clone, Debug)]
pub struct ClaimLimits {
    /// The claiming runner's node id; it becomes the lease owner.
    pub node_id: String,
    pub lease_ms: i64,
    /// Most tasks this node runs at once.
    pub node_capacity: i64,
    /// Most tasks one user has running at once, across all nodes.
    pub per_user_limit: i64,
}

/// How an attempt ended, as the runner reports it.
#[derive(Clone, Debug)]
pub struct TaskEnd {
    /// `Succeeded`, `Failed`, `Cancelled` or `TimedOut`.
    pub status: TaskStatus,
    /// Why it did not succeed, in words.
    pub reason: Option<String>,
    /// The change made, kept whatever the ending.
    pub diff: Option<Vec<u8>>,
    pub branch: Option<String>,
    pub pull_request_url: Option<String>,
}

/// What a handed-back attempt leads to: another try, or the end of the task.
pub(crate) fn after_release(
    status: TaskStatus,
    attempt: i64,
    max_attempts: i64,
    reason: &str,
    counts_as_attempt: bool,
) -> (TaskStatus, String) {
    if status == TaskStatus::Cancelling {
        (
            TaskStatus::Cancelled,
            format!("cancelled by its owner; {reason}"),
        )
    } else if counts_as_attempt && attempt >= max_attempts {
        (
            TaskStatus::Failed,
            format!("gave up after {attempt} attempts: {reason}"),
        )
    } else {
        (
            TaskStatus::Queued,
            format!("{reason}; retrying (attempt {attempt} of {max_attempts} used)"),
        )
    }
}

/// What a runner needs to rebuild a task's workspace and continue its conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkState {
    pub base_commit: Option<String>,
    /// A follow-up prompt not yet answered; cleared by the next message appended.
    pub pending_prompt: Option<String>,
}

/// What became of a task whose attempt was handed back or whose lease ran out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    pub task_id: TaskId,
    /// `Queued` when it will be tried again; `Failed` or `Cancelled` when it ended.
    pub status: TaskStatus,
}

/// A user's account as admins see it: GitHub identity, role and state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    pub id: UserId,
    pub name: String,
    pub github_id: Option<i64>,
    pub login: Option<String>,
    pub is_admin: bool,
    /// When an admin disabled the user, in ms; `None` while the user may sign in.
    pub disabled_at: Option<i64>,
    pub created_at: i64,
}

/// A GitHub user who has just proved who they are.
#[derive(Clone, Debug)]
pub struct GithubIdentity {
    pub github_id: i64,
    pub login: String,
}

/// A GitHub token as stored: the id of the key it is sealed under, and nonce + ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedToken {
    pub user_id: UserId,
    pub key_id: String,
    pub sealed: Vec<u8>,
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub actor_id: Option<UserId>,
    pub action: String,
    pub subject_id: Option<UserId>,
    pub detail: serde_json::Value,
    pub created_at: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;
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

    /// Returns the user with this name, creating it if needed.
    async fn upsert_user(&self, name: &str) -> Result<User>;
    async fn count_users(&self) -> Result<i64>;
    async fn insert_token(&self, token: NewToken) -> Result<TokenInfo>;
    /// Finds the live (not revoked) token with this hash and its user.
    async fn authenticate(&self, token_hash: &str) -> Result<Option<Principal>>;
    async fn list_tokens(&self, user_id: UserId) -> Result<Vec<TokenInfo>>;
    /// Revokes one of the user's tokens; `None` if the user has no such token.
    async fn revoke_token(&self, user_id: UserId, id: TokenId) -> Result<Option<TokenInfo>>;

    /// Stores a stream ticket (its hash) for the user, valid for `ttl_ms`; also forgets
    /// expired ones.
    async fn insert_stream_ticket(
        &self,
        user_id: UserId,
        ticket_hash: &str,
        ttl_ms: i64,
    ) -> Result<()>;
    /// Uses up a ticket: the user it was made for, once, if it has not expired.
    async fn redeem_stream_ticket(&self, ticket_hash: &str) -> Result<Option<User>>;

    /// Enqueues a task and writes its first event (`status: queued`), in one transaction.
    async fn create_task(&self, new: NewTask) -> Result<Created>;
    /// The owner's task; `None` for a task that does not exist or belongs to someone else.
    async fn get_task(&self, owner_id: UserId, id: TaskId) -> Result<Option<Task>>;
    async fn list_tasks(&self, owner_id: UserId, query: TaskQuery) -> Result<Vec<Task>>;
    /// The owner's tasks changed after `after` (`(updated_at in ms, id)`), oldest change first:
    /// what a client following all its tasks missed.
    async fn list_tasks_changed(
        &self,
        owner_id: UserId,
        after: (i64, TaskId),
        limit: i64,
    ) -> Result<Vec<Task>>;
    /// Cancels a queued task at once, and asks a running one to stop (`cancelling`).
    /// A task that has already ended is returned as it is.
    async fn cancel_task(&self, owner_id: UserId, id: TaskId) -> Result<Option<Task>>;
    /// Events after `after`, at most `limit`, with the task's newest sequence number.
    async fn list_events(
        &self,
        owner_id: UserId,
        id: TaskId,
        after: i64,
        limit: i64,
    ) -> Result<Option<(Vec<Event>, i64)>>;
    /// Appends an event written by the attempt `fence`; refused once that attempt lost the task.
    async fn append_event(
        &self,
        fence: Fence,
        kind: EventKind,
        payload: serde_json::Value,
    ) -> Result<i64>;
    /// Takes the next task the limits allow, fairly across users: the user with the fewest
    /// running tasks first, then the one served least recently, then the oldest task. The task
    /// becomes `running`, leased to the node, with its attempt number bumped.
    async fn claim_next_task(&self, limits: &ClaimLimits) -> Result<Option<Task>>;
    /// Extends the attempt's lease. `None` when the attempt no longer holds the task.
    async fn heartbeat(&self, fence: Fence, lease_ms: i64) -> Result<Option<TaskStatus>>;
    /// Tasks held by `node_id` whose owner asked to cancel them.
    async fn cancelling_on_node(&self, node_id: &str) -> Result<Vec<Fence>>;
    /// Ends the attempt and the task, storing the diff; `Fenced` if the attempt lost the task.
    async fn finish_task(&self, fence: Fence, end: TaskEnd) -> Result<()>;
    /// Hands the task back after an infrastructure failure or a drain. With `retry_in_ms`,
    /// the attempt counts: the task is requeued to start no sooner than that, or fails once
    /// its attempts are used up. Without it (a drain), it is requeued at once.
    async fn release_task(
        &self,
        fence: Fence,
        reason: &str,
        retry_in_ms: Option<i64>,
    ) -> Result<Released>;
    /// Requeues (or, after the last attempt, fails) every task whose lease ran out, and ends
    /// orphaned `cancelling` tasks. `backoff_ms(attempt)` says how long a retry waits.
    async fn reap_expired_leases(
        &self,
        backoff_ms: &(dyn Fn(i64) -> i64 + Send + Sync),
    ) -> Result<Vec<Released>>;

    /// Appends one message to the task's model transcript, fenced by the attempt.
    async fn append_message(&self, fence: Fence, message: serde_json::Value) -> Result<i64>;
    /// The whole transcript, in order, for resuming a task.
    async fn list_messages(&self, task_id: TaskId) -> Result<Vec<serde_json::Value>>;
    /// Adds one model turn's tokens and cost to the task's totals, fenced by the attempt.
    async fn add_usage(&self, fence: Fence, usage: &berth_proto::Usage) -> Result<()>;
    /// Stores the task's diff so far (served by the diff endpoint while it runs, and the
    /// workspace the next attempt restores), fenced by the attempt; empty removes it.
    async fn save_diff(&self, fence: Fence, diff: &[u8]) -> Result<()>;
    /// Remembers the commit the task's work starts from (set once, by its first attempt).
    async fn set_base_commit(&self, fence: Fence, commit: &str) -> Result<()>;
    /// The runner's view of a task it holds: base commit and a follow-up prompt, if any.
    async fn work_state(&self, task_id: TaskId) -> Result<WorkState>;
    /// Queues a follow-up on a task that has ended: the next attempt continues the same
    /// transcript and workspace with its prompt. `None` if the task is unknown or not the
    /// owner's; `Err(Conflict)` if it has not ended. A follow-up whose idempotency key this
    /// task has seen queues nothing: it answers the task as it is now, `created: false`.
    async fn continue_task(
        &self,
        owner_id: UserId,
        id: TaskId,
        follow_up: NewFollowUp,
    ) -> Result<Option<Created>>;

    /// The task's stored diff, if any.
    async fn get_diff(&self, owner_id: UserId, id: TaskId) -> Result<Option<Vec<u8>>>;

    // Accounts
    /// Finds the user by GitHub id (updating the login after a rename) or creates it; the
    /// first user of an empty database becomes admin when `first_user_admin`.
    async fn upsert_github_user(
        &self,
        identity: &GithubIdentity,
        first_user_admin: bool,
    ) -> Result<Account>;
    async fn get_account(&self, user_id: UserId) -> Result<Option<Account>>;
    async fn list_accounts(&self) -> Result<Vec<Account>>;
    /// Marks the user disabled, revokes their API tokens and ends their web sessions, in one
    /// transaction. `None` if there is no such user.
    async fn disable_user(&self, user_id: UserId) -> Result<Option<Account>>;
    /// Stores a web session (its hash) valid for `ttl_ms`; also forgets expired ones.
    async fn insert_session(&self, user_id: UserId, session_hash: &str, ttl_ms: i64) -> Result<()>;
    /// The live session's user, unless expired or the user is disabled.
    async fn authenticate_session(&self, session_hash: &str) -> Result<Option<Principal>>;
    async fn delete_session(&self, session_hash: &str) -> Result<()>;
    /// Remembers an OAuth `state` (hashed) and its PKCE verifier for `ttl_ms`.
    async fn insert_sign_in_state(
        &self,
        state_hash: &str,
        verifier: &str,
        ttl_ms: i64,
    ) -> Result<()>;
    /// Uses up a `state`: its verifier, once, if it has not expired.
    async fn take_sign_in_state(&self, state_hash: &str) -> Result<Option<String>>;
    async fn put_github_token(&self, token: &SealedToken) -> Result<()>;
    async fn get_github_token(&self, user_id: UserId) -> Result<Option<SealedToken>>;
    /// Every stored GitHub token, for re-encrypting under a new key.
    async fn list_github_tokens(&self) -> Result<Vec<SealedToken>>;
    async fn append_audit(
        &self,
        actor_id: Option<UserId>,
        action: &str,
        subject_id: Option<UserId>,
        detail: serde_json::Value,
    ) -> Result<()>;
    /// The newest `limit` audit entries, newest first.
    async fn list_audit(&self, limit: i64) -> Result<Vec<AuditEntry>>;
}

/// Opens the store a database URL names: `postgres://…` or `postgresql://…` for PostgreSQL;
/// anything else is refused. Use [`open_sqlite`] for the default data directory.
pub async fn open_url(url: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(PostgresStore::connect(url).await?))
}

/// Opens (creating if needed) the SQLite database `berth.db` in `data_dir`.
pub async fn open_sqlite(data_dir: &Path) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(
        SqliteStore::open(&data_dir.join("berth.db")).await?,
    ))
}
