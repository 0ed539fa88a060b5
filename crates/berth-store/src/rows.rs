//! Rows as both backends return them, and their conversion to wire types. SQLite and
//! PostgreSQL decode to the same Rust types, so one set of rows serves both.

use berth_proto::{
    Agent, Budget, Event, EventKind, Network, Resources, Task, TaskResult, TaskStatus, TokenInfo,
    Usage,
};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use crate::StoreError;

/// The columns of `tasks` that `TaskRow` reads. A macro, so that queries can be `concat!`ed
/// into static strings.
macro_rules! task_columns {
    () => {
        "id, owner_id, status, repo_url, git_ref, prompt, model, network, budget, timeout_secs, \
         open_pull_request, attempt, created_at, updated_at, started_at, finished_at, has_diff, \
         branch, pull_request_url, input_tokens, output_tokens, cache_write_tokens, \
         cache_read_tokens, cost_usd, error, last_event_seq, request_hash, resources, agent"
    };
}
pub(crate) use task_columns;

macro_rules! token_columns {
    () => {
        "id, user_id, name, prefix, created_at, last_used_at, revoked_at"
    };
}
pub(crate) use token_columns;

#[derive(sqlx::FromRow)]
pub(crate) struct TaskRow {
    id: Uuid,
    owner_id: Uuid,
    status: String,
    repo_url: String,
    git_ref: Option<String>,
    prompt: String,
    model: Option<String>,
    network: String,
    budget: Json<Budget>,
    timeout_secs: Option<i64>,
    open_pull_request: bool,
    attempt: i64,
    created_at: i64,
    updated_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    has_diff: bool,
    branch: Option<String>,
    pull_request_url: Option<String>,
    input_tokens: i64,
    output_tokens: i64,
    cache_write_tokens: i64,
    cache_read_tokens: i64,
    cost_usd: f64,
    error: Option<String>,
    last_event_seq: i64,
    pub(crate) request_hash: Option<String>,
    resources: Json<Resources>,
    agent: Option<String>,
}

impl TryFrom<TaskRow> for Task {
    type Error = StoreError;

    fn try_from(row: TaskRow) -> Result<Self, StoreError> {
        let status = TaskStatus::parse(&row.status)
            .ok_or_else(|| StoreError::Corrupt(format!("task status {:?}", row.status)))?;
        let network = Network::parse(&row.network)
            .ok_or_else(|| StoreError::Corrupt(format!("task network {:?}", row.network)))?;
        let agent = match row.agent.as_deref() {
            None => None,
            Some(agent) => Some(
                Agent::parse(agent)
                    .ok_or_else(|| StoreError::Corrupt(format!("task agent {agent:?}")))?,
            ),
        };
        Ok(Task {
            id: row.id.into(),
            owner_id: row.owner_id.into(),
            status,
            repo_url: row.repo_url,
            git_ref: row.git_ref,
            prompt: row.prompt,
            model: row.model,
            network,
            budget: row.budget.0,
            timeout_secs: row.timeout_secs.map(|secs| secs as u64),
            open_pull_request: row.open_pull_request,
            resources: row.resources.0,
            agent,
            attempt: row.attempt,
            created_at: time(row.created_at),
            updated_at: time(row.updated_at),
            started_at: row.started_at.map(time),
            finished_at: row.finished_at.map(time),
            result: TaskResult {
                has_diff: row.has_diff,
                branch: row.branch,
                pull_request_url: row.pull_request_url,
            },
            usage: Usage {
                input_tokens: row.input_tokens as u64,
                output_tokens: row.output_tokens as u64,
                cache_write_tokens: row.cache_write_tokens as u64,
                cache_read_tokens: row.cache_read_tokens as u64,
                cost_usd: row.cost_usd,
            },
            error: row.error,
            last_event_seq: row.last_event_seq,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    task_id: Uuid,
    seq: i64,
    attempt: i64,
    kind: String,
    payload: Json<serde_json::Value>,
    created_at: i64,
}

impl TryFrom<EventRow> for Event {
    type Error = StoreError;

    fn try_from(row: EventRow) -> Result<Self, StoreError> {
        let kind = EventKind::parse(&row.kind)
            .ok_or_else(|| StoreError::Corrupt(format!("event kind {:?}", row.kind)))?;
        Ok(Event {
            task_id: row.task_id.into(),
            seq: row.seq,
            attempt: row.attempt,
            kind,
            payload: row.payload.0,
            created_at: time(row.created_at),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct TokenRow {
    id: Uuid,
    user_id: Uuid,
    name: String,
    prefix: String,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl From<TokenRow> for TokenInfo {
    fn from(row: TokenRow) -> Self {
        TokenInfo {
            id: row.id.into(),
            user_id: row.user_id.into(),
            name: row.name,
            prefix: row.prefix,
            created_at: time(row.created_at),
            last_used_at: row.last_used_at.map(time),
            revoked_at: row.revoked_at.map(time),
        }
    }
}

/// Milliseconds since the epoch, as stored, to a UTC time.
pub(crate) fn time(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

pub(crate) fn tasks(rows: Vec<TaskRow>) -> Result<Vec<Task>, StoreError> {
    rows.into_iter().map(Task::try_from).collect()
}

pub(crate) fn events(rows: Vec<EventRow>) -> Result<Vec<Event>, StoreError> {
    rows.into_iter().map(Event::try_from).collect()
}
