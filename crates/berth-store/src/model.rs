//! The values the store takes and gives back: what callers build (a new task, a token to
//! keep) and what they read (a principal, an account, how an attempt ended).

use berth_proto::{Task, TaskId, TaskStatus, TokenId, UserId};

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
    /// Where on GitHub the task comes from, linked in the transaction that creates it: a
    /// runner that claims it at once already clones with the App's token and says which
    /// issue the pull request fixes.
    pub github: Option<GithubOrigin>,
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
    /// The sequence number of the first event of what was created (the task's `queued`, or
    /// the follow-up's): events from there on are its own. `None` for a follow-up recorded
    /// before this was kept.
    pub first_seq: Option<i64>,
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

/// A delivery GitHub sent to the App's webhook, its signature checked.
#[derive(Clone, Debug)]
pub struct NewGithubDelivery {
    /// `X-GitHub-Delivery`.
    pub delivery_id: String,
    /// Hex SHA-256 of the body as it arrived.
    pub body_sha256: String,
    /// `X-GitHub-Event`.
    pub event: String,
    pub payload: serde_json::Value,
}

/// The issue on GitHub a task is created for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GithubOrigin {
    pub installation_id: i64,
    /// `owner/name`.
    pub repository: String,
    pub issue_number: i64,
}

/// Where a task started from GitHub came from, and Berth's comment there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GithubLink {
    pub task_id: TaskId,
    pub owner_id: UserId,
    pub installation_id: i64,
    /// `owner/name`.
    pub repository: String,
    /// The issue the task works on.
    pub issue_number: i64,
    /// Berth's comment that says how the task stands (on the issue, or on the pull request for
    /// a follow-up).
    pub comment_id: Option<i64>,
}

/// A message of the outbox, as a sender claimed it.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxMessage {
    /// The same on every attempt (for webhooks, the `webhook-id`).
    pub id: String,
    pub topic: String,
    pub payload: serde_json::Value,
    /// Attempts so far, this one included: pass it back to `retry_outbox`.
    pub attempts: i64,
    pub created_at: i64,
}

/// A webhook endpoint to register.
#[derive(Clone, Debug)]
pub struct NewWebhook {
    pub owner_id: UserId,
    pub url: String,
    /// The signing secret, `whsec_` and base64.
    pub secret: String,
    /// `standard` or `slack`.
    pub format: String,
}

/// A registered webhook endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: berth_proto::WebhookId,
    pub owner_id: UserId,
    pub url: String,
    pub secret: String,
    pub format: String,
    pub created_at: i64,
}

/// A browser's Web Push subscription to keep, its keys already checked.
#[derive(Clone, Debug)]
pub struct NewPushSubscription {
    pub owner_id: UserId,
    /// The push service's URL for the browser.
    pub endpoint: String,
    /// The browser's P-256 public key and authentication secret, base64url.
    pub p256dh: String,
    pub auth: String,
}

/// A stored Web Push subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushSubscription {
    pub id: berth_proto::PushSubscriptionId,
    pub owner_id: UserId,
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
    pub created_at: i64,
}

/// A prepared environment image on one runner node, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvironmentRecord {
    pub node_id: String,
    /// The cache key (hex of a hash over the environment's inputs).
    pub key: String,
    pub repo_url: String,
    pub image: String,
    /// `building`, `ready`, `failed`, or `stale` (a rebuild was asked for).
    pub state: String,
    /// The setup's output (redacted), bounded.
    pub log: String,
    pub size_bytes: i64,
    pub last_used: i64,
    pub created_at: i64,
}

/// A secret's sealed value, for the setup of one user's tasks on one repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupSecret {
    pub repo_url: String,
    pub name: String,
    pub sealed: SealedToken,
}
