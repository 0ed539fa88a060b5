//! The task: what a user asked for, where it stands, and what came of it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{TaskId, UserId};

/// Where a task is in its life. `cancelling` is the only state between `running` and an end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Queued,
    Running,
    Cancelling,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 7] = [
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Cancelling,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
        TaskStatus::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Cancelling => "cancelling",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::TimedOut => "timed_out",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// True once the task can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded
                | TaskStatus::Failed
                | TaskStatus::Cancelled
                | TaskStatus::TimedOut
        )
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the agent phase of a task may reach the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// No network at all while the agent works (the default).
    #[default]
    None,
    /// The container keeps its bridge network.
    Full,
    /// Only the domains the server allows (its `egress_allowed_domains`, narrowed by the
    /// repository's environment), over HTTP(S) through Berth's egress proxy; every request,
    /// allowed or refused, is an `egress` event.
    Allowlist,
}

impl Network {
    pub fn as_str(self) -> &'static str {
        match self {
            Network::None => "none",
            Network::Full => "full",
            Network::Allowlist => "allowlist",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Network::None),
            "full" => Some(Network::Full),
            "allowlist" => Some(Network::Allowlist),
            _ => None,
        }
    }
}

/// Which agent does a task's work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Agent {
    /// Berth's own loop: the model is called from the runner, its tools run in the sandbox.
    #[default]
    Berth,
    /// The Claude Code CLI inside the sandbox, reaching the model through the runner's
    /// metered proxy (docs/claude-code.md).
    ClaudeCode,
}

impl Agent {
    pub fn as_str(self) -> &'static str {
        match self {
            Agent::Berth => "berth",
            Agent::ClaudeCode => "claude-code",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "berth" => Some(Agent::Berth),
            "claude-code" => Some(Agent::ClaudeCode),
            _ => None,
        }
    }
}

/// Limits that end a task cleanly, keeping its work, when one is reached.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Most model turns (requests to the model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Most tokens, input and output together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Most spend in US dollars, priced from the server's price table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_usd: Option<f64>,
}

/// Sandbox resources a task asks for; each at most what the server allows (its
/// `sandbox_memory_mb`, `sandbox_cpus`, `sandbox_pids`), which is also the default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.memory_mb.is_none() && self.cpus.is_none() && self.pids.is_none()
    }
}

/// The body of `POST /v1/tasks`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "repo_url": "https://github.com/owner/name",
    "prompt": "Make the failing test in tests/parse.rs pass"
}))]
pub struct CreateTask {
    /// The git repository to work on: `https://host/owner/repo(.git)`, `ssh://git@host/owner/repo`
    /// or `git@host:owner/repo`, on one of the server's allowed git hosts.
    pub repo_url: String,
    /// What the agent should do, in plain words.
    pub prompt: String,
    /// Branch, tag or commit to start from; the repository's default branch when absent.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// The model to use; the server's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Network for the agent phase; the server's `default_network` (`none` unless the
    /// operator chose `allowlist`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(default)]
    pub budget: Budget,
    /// Longest the task may run, in seconds; the server's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Push a branch and open a pull request when the task succeeds.
    #[serde(default)]
    pub open_pull_request: bool,
    /// Smaller sandbox limits than the server's, if wanted.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// `berth` or `claude-code`; the server's `agent` setting when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Agent>,
}

impl CreateTask {
    pub fn new(repo_url: impl Into<String>, prompt: impl Into<String>) -> Self {
        Self {
            repo_url: repo_url.into(),
            prompt: prompt.into(),
            git_ref: None,
            model: None,
            network: None,
            budget: Budget::default(),
            timeout_secs: None,
            open_pull_request: false,
            resources: Resources::default(),
            agent: None,
        }
    }
}

/// Tokens used by a task and what they cost.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_write_tokens: u64,
    pub cache_read_tokens: u64,
    pub cost_usd: f64,
}

/// What a finished task left behind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskResult {
    /// True when a diff is stored (`GET /v1/tasks/{id}/diff`).
    pub has_diff: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request_url: Option<String>,
}

/// A task as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    pub id: TaskId,
    pub owner_id: UserId,
    pub status: TaskStatus,
    pub repo_url: String,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    pub prompt: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub network: Network,
    pub budget: Budget,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    pub open_pull_request: bool,
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// The agent the task asked for; the server's `agent` setting when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Agent>,
    /// How many times a runner has claimed the task.
    pub attempt: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    pub result: TaskResult,
    pub usage: Usage,
    /// Why the task failed, timed out or was cancelled, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Sequence number of the newest event in the task's log.
    pub last_event_seq: i64,
}
