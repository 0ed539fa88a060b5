//! What the store promises, one trait per role; the doc comment of each method is its
//! contract. Callers hold an `Arc<dyn Store>`, on which every role's methods can be called
//! without importing the role traits (a trait object answers for its supertraits).

use async_trait::async_trait;
use berth_proto::{
    Event, EventKind, PushSubscriptionId, Task, TaskId, TaskStatus, TokenId, TokenInfo, UserId,
    WebhookId,
};

use crate::{
    Account, AuditEntry, ClaimLimits, Created, EnvironmentRecord, Fence, GithubIdentity,
    GithubLink, NewFollowUp, NewGithubDelivery, NewPushSubscription, NewTask, NewToken, NewWebhook,
    OutboxMessage, Principal, PushSubscription, Released, Result, SealedToken, SetupSecret,
    TaskEnd, TaskQuery, User, WebhookEndpoint, WorkState,
};

/// A user's tasks, as their owner sees and changes them.
#[async_trait]
pub trait Tasks: Send + Sync {
    /// Enqueues a task and writes its first event (`status: queued`), in one transaction.
    async fn create_task(&self, new: NewTask) -> Result<Created>;
    /// The owner's task; `None` for a task that does not exist or belongs to someone else.
    async fn get_task(&self, owner_id: UserId, id: TaskId) -> Result<Option<Task>>;
    async fn list_tasks(&self, owner_id: UserId, query: TaskQuery) -> Result<Vec<Task>>;
    /// How many tasks are in each state, all owners together (for metrics); states no task
    /// is in are left out.
    async fn count_tasks_by_status(&self) -> Result<Vec<(TaskStatus, i64)>>;
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
}

/// A task's event log: what every client of the task can see.
#[async_trait]
pub trait Events: Send + Sync {
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
}

/// The task table as a queue: claims, leases and how attempts end.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Takes the next task the limits allow, fairly across users: the user with the fewest
    /// running tasks first, then the one served least recently, then the oldest task. The task
    /// becomes `running`, leased to the node, with its attempt number bumped.
    async fn claim_next_task(&self, limits: &ClaimLimits) -> Result<Option<Task>>;
    /// Extends the attempt's lease. `None` when the attempt no longer holds the task.
    async fn heartbeat(&self, fence: Fence, lease_ms: i64) -> Result<Option<TaskStatus>>;
    /// Tasks held by `node_id` whose owner asked to cancel them.
    async fn cancelling_on_node(&self, node_id: &str) -> Result<Vec<Fence>>;
    /// Every attempt `node_id` holds (running or cancelling). A node that starts again under
    /// its own id finds here the attempts its previous run lost.
    async fn held_by_node(&self, node_id: &str) -> Result<Vec<Fence>>;
    /// Every attempt that holds its task now, on any node: what may still have a sandbox.
    async fn live_attempts(&self) -> Result<Vec<Fence>>;
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
}

/// What an attempt keeps as it works, so that the next attempt or a follow-up can go on.
#[async_trait]
pub trait Transcript: Send + Sync {
    /// The whole transcript, in order, for resuming a task.
    async fn list_messages(&self, task_id: TaskId) -> Result<Vec<serde_json::Value>>;
    /// Adds one model turn's tokens and cost to the task's totals, fenced by the attempt.
    async fn add_usage(&self, fence: Fence, usage: &berth_proto::Usage) -> Result<()>;
    /// Stores one turn of the conversation in one transaction, fenced by the attempt: its
    /// message appended to the transcript, the tokens and cost of a model turn added to the
    /// task's totals, and `events` (the turn's usage and text, a tool call, a tool's result)
    /// appended in order. One write per turn instead of one per part keeps the agent loop's
    /// own time per step down (issue 17).
    async fn record_turn(
        &self,
        fence: Fence,
        usage: Option<&berth_proto::Usage>,
        message: serde_json::Value,
        events: Vec<(EventKind, serde_json::Value)>,
    ) -> Result<()>;
    /// Stores the task's diff so far (served by the diff endpoint while it runs, and the
    /// workspace the next attempt restores), fenced by the attempt; empty removes it.
    async fn save_diff(&self, fence: Fence, diff: &[u8]) -> Result<()>;
    /// Remembers the commit the task's work starts from (set once, by its first attempt).
    async fn set_base_commit(&self, fence: Fence, commit: &str) -> Result<()>;
    /// The runner's view of a task it holds: base commit and a follow-up prompt, if any.
    async fn work_state(&self, task_id: TaskId) -> Result<WorkState>;
}

/// Users as API tokens know them, their tokens, and the tickets browsers stream with.
#[async_trait]
pub trait Tokens: Send + Sync {
    /// Returns the user with this name, creating it if needed.
    async fn upsert_user(&self, name: &str) -> Result<User>;
    async fn count_users(&self) -> Result<i64>;
    async fn insert_token(&self, token: NewToken) -> Result<TokenInfo>;
    /// Finds the live (not revoked) token with this hash and its user.
    async fn authenticate(&self, token_hash: &str) -> Result<Option<Principal>>;
    async fn list_tokens(&self, user_id: UserId) -> Result<Vec<TokenInfo>>;
    /// Revokes one of the user's tokens; `None` if the user has no such token. The user's
    /// open streams, on every node, are told to look again (see [`Tokens::still_valid`]).
    async fn revoke_token(&self, user_id: UserId, id: TokenId) -> Result<Option<TokenInfo>>;
    /// Whether what `principal` signed in with (an API token or a web session, by its id) is
    /// still good: not revoked, not signed out or expired, its user not disabled.
    async fn still_valid(&self, principal: &Principal) -> Result<bool>;

    /// Stores a stream ticket (its hash) for `principal`, valid for `ttl_ms`; also forgets
    /// expired ones.
    async fn insert_stream_ticket(
        &self,
        principal: &Principal,
        ticket_hash: &str,
        ttl_ms: i64,
    ) -> Result<()>;
    /// Uses up a ticket: the principal it was made for, once, if it has not expired.
    async fn redeem_stream_ticket(&self, ticket_hash: &str) -> Result<Option<Principal>>;
}

/// Accounts of people who sign in with GitHub: sessions, sign-in states, sealed GitHub
/// tokens, and the audit log of what admins did.
#[async_trait]
pub trait Accounts: Send + Sync {
    /// Finds the user by GitHub id (updating the login after a rename) or creates it; the
    /// first user of an empty database becomes admin when `first_user_admin`.
    async fn upsert_github_user(
        &self,
        identity: &GithubIdentity,
        first_user_admin: bool,
    ) -> Result<Account>;
    async fn get_account(&self, user_id: UserId) -> Result<Option<Account>>;
    async fn list_accounts(&self) -> Result<Vec<Account>>;
    /// Marks the user disabled, revokes their API tokens, ends their web sessions and removes
    /// their push subscriptions, in one transaction. `None` if there is no such user.
    async fn disable_user(&self, user_id: UserId) -> Result<Option<Account>>;
    /// Stores a web session (its hash) valid for `ttl_ms`; also forgets expired ones.
    async fn insert_session(&self, user_id: UserId, session_hash: &str, ttl_ms: i64) -> Result<()>;
    /// The live session's user, unless expired or the user is disabled.
    async fn authenticate_session(&self, session_hash: &str) -> Result<Option<Principal>>;
    /// Ends a web session (signing out); the user's open streams are told to look again.
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

/// Messages to send, written in the same transaction as what they tell, and sent until they
/// are acknowledged: at least once, never again after the acknowledgement. Status events queue
/// them by themselves: `task.created`, `task.started` and `task.ended` for each of the owner's
/// webhook endpoints (topic `webhook`), an ending of a task started from GitHub (topic
/// `github`), and each ending for each of the owner's push subscriptions (topic `push`).
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Queues a message unless one with its id exists; whether it was queued.
    async fn enqueue_outbox(
        &self,
        id: &str,
        topic: &str,
        payload: serde_json::Value,
    ) -> Result<bool>;
    /// Takes the oldest due message of `topic` that no other sender holds, and holds it for
    /// `lease_ms` (after which another sender may take it), counting the attempt. `None` when
    /// nothing is due.
    async fn claim_outbox(&self, topic: &str, lease_ms: i64) -> Result<Option<OutboxMessage>>;
    /// Records that the message was delivered: it is never handed out again.
    async fn ack_outbox(&self, id: &str) -> Result<()>;
    /// Hands the message back after attempt `attempt` failed with `error`: due again in
    /// `retry_in_ms`, or, with `None`, given up. Does nothing to a message delivered meanwhile
    /// or claimed again since.
    async fn retry_outbox(
        &self,
        id: &str,
        attempt: i64,
        error: &str,
        retry_in_ms: Option<i64>,
    ) -> Result<()>;
}

/// GitHub as a front door: the deliveries taken, and the tasks they started.
#[async_trait]
pub trait GithubTasks: Send + Sync {
    /// Records a delivery and queues it (topic `github`, message id `github:<delivery id>`),
    /// in one transaction. `false`, storing nothing, when a delivery with the same id or the
    /// same body was recorded before.
    async fn record_github_delivery(&self, delivery: NewGithubDelivery) -> Result<bool>;
    /// Forgets deliveries received more than `age_ms` ago (they are refused as stale anyway);
    /// how many.
    async fn forget_github_deliveries(&self, age_ms: i64) -> Result<u64>;
    /// Where a task came from on GitHub (`NewTask::github` links it as it is created).
    async fn github_link(&self, task_id: TaskId) -> Result<Option<GithubLink>>;
    /// The GitHub task whose pull request is at `pull_request_url`.
    async fn github_task_by_pull_request(
        &self,
        pull_request_url: &str,
    ) -> Result<Option<GithubLink>>;
    /// Remembers Berth's comment that tells how the task stands.
    async fn set_github_comment(&self, task_id: TaskId, comment_id: i64) -> Result<()>;
}

/// Users' webhook endpoints.
#[async_trait]
pub trait Webhooks: Send + Sync {
    async fn create_webhook(&self, new: NewWebhook) -> Result<WebhookEndpoint>;
    /// The owner's endpoints, oldest first.
    async fn list_webhooks(&self, owner_id: UserId) -> Result<Vec<WebhookEndpoint>>;
    /// Removes one of the owner's endpoints; nothing more is sent to it. `false` if the owner
    /// has no such endpoint.
    async fn delete_webhook(&self, owner_id: UserId, id: WebhookId) -> Result<bool>;
    /// A live endpoint, whoever owns it (for the sender).
    async fn get_webhook(&self, id: WebhookId) -> Result<Option<WebhookEndpoint>>;
}

/// Users' Web Push subscriptions: one per browser (its push service endpoint) and user.
#[async_trait]
pub trait PushSubscriptions: Send + Sync {
    /// Keeps the owner's subscription at `endpoint`, or takes the new keys into the one the
    /// owner has there; whether it is new.
    async fn put_push_subscription(
        &self,
        new: NewPushSubscription,
    ) -> Result<(PushSubscription, bool)>;
    /// The owner's subscriptions, oldest first.
    async fn list_push_subscriptions(&self, owner_id: UserId) -> Result<Vec<PushSubscription>>;
    /// Removes the owner's subscription at `endpoint`; nothing more is sent to it. `false` if
    /// the owner has none there.
    async fn delete_push_subscription(&self, owner_id: UserId, endpoint: &str) -> Result<bool>;
    /// A subscription, whoever owns it (for the sender); `None` once it is removed.
    async fn get_push_subscription(
        &self,
        id: PushSubscriptionId,
    ) -> Result<Option<PushSubscription>>;
    /// Removes every subscription at `endpoint`, whoever owns it: the push service said it is
    /// gone. How many.
    async fn forget_push_endpoint(&self, endpoint: &str) -> Result<u64>;
}

/// Prepared environments (what each runner node keeps per cache key) and the setup secrets
/// users give their tasks on a repository.
#[async_trait]
pub trait Environments: Send + Sync {
    /// Records the environment's state, log and size (`last_used` and `created_at` are the
    /// database's now; `created_at` only when new).
    async fn put_environment(&self, record: &EnvironmentRecord) -> Result<()>;
    /// The environments of a repository on every node, most recently used first.
    async fn list_environments(&self, repo_url: &str) -> Result<Vec<EnvironmentRecord>>;
    /// The environments under one cache key, one per node that has it.
    async fn get_environment(&self, key: &str) -> Result<Vec<EnvironmentRecord>>;
    /// Marks the key's environments `stale`, so that each node prepares it again before its
    /// next use; `false` when there is none.
    async fn mark_environment_stale(&self, key: &str) -> Result<bool>;
    /// Forgets a node's environment (its image was removed).
    async fn delete_environment(&self, node_id: &str, key: &str) -> Result<()>;
    /// Whether the user has ever had a task on the repository (who may see its environments).
    async fn has_task_on_repo(&self, owner_id: UserId, repo_url: &str) -> Result<bool>;

    /// Keeps a sealed setup secret (`sealed.user_id` owns it), replacing one of the same name.
    async fn put_setup_secret(&self, secret: &SetupSecret) -> Result<()>;
    /// The user's setup secrets for the repository, by name.
    async fn list_setup_secrets(
        &self,
        owner_id: UserId,
        repo_url: &str,
    ) -> Result<Vec<SetupSecret>>;
    /// Every user's setup secrets (for `berth keys rotate`).
    async fn list_all_setup_secrets(&self) -> Result<Vec<SetupSecret>>;
    /// Removes one; `false` if there was none of that name.
    async fn delete_setup_secret(
        &self,
        owner_id: UserId,
        repo_url: &str,
        name: &str,
    ) -> Result<bool>;
}
