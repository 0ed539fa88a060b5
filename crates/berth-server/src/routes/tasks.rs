//! `/v1/tasks`: create, list, read and cancel tasks, and read their event logs and diffs.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use berth_agent::publish::repository_on;
use berth_proto::{CreateTask, ErrorBody, EventPage, FollowUp, Task, TaskId, TaskPage, TaskStatus};
use berth_store::{NewFollowUp, NewTask, TaskQuery};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::AppState;

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;
const DEFAULT_EVENT_PAGE: i64 = 500;
const MAX_EVENT_PAGE: i64 = 1000;
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tasks", post(create_task).get(list_tasks))
        .route("/v1/tasks/{id}", get(get_task))
        .route("/v1/tasks/{id}/cancel", post(cancel_task))
        .route("/v1/tasks/{id}/events", get(list_events))
        .route("/v1/tasks/{id}/diff", get(get_diff))
        .route("/v1/tasks/{id}/messages", post(follow_up))
}

/// Create a task. With an `Idempotency-Key`, a retry returns the task the first request made.
#[utoipa::path(
    post, path = "/v1/tasks", tag = "tasks", request_body = CreateTask,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Any unique string up to 255 characters; a retry with the same key \
                       returns the same task")),
    responses(
        (status = 201, description = "Task created", body = Task),
        (status = 200, description = "Task created earlier with the same Idempotency-Key", body = Task),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or revoked token", body = ErrorBody),
        (status = 413, description = "Body or prompt over the limit", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn create_task(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateTask>,
) -> ApiResult<Response> {
    validate(&state, &request)?;
    if request.open_pull_request {
        check_github_token(&state, caller.user_id()).await?;
    }
    let idempotency = idempotency_key(&headers)?.map(|key| (key, request_hash(&request)));
    let created = state
        .store
        .create_task(NewTask {
            owner_id: caller.user_id(),
            request,
            max_attempts: state.config.max_attempts,
            idempotency,
        })
        .await?;
    let status = if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/v1/tasks/{}", created.task.id);
    Ok((status, [(header::LOCATION, location)], Json(created.task)).into_response())
}

fn check_prompt(state: &AppState, prompt: &str) -> ApiResult<()> {
    if prompt.trim().is_empty() {
        return Err(ApiError::unprocessable("invalid_prompt", "prompt is empty"));
    }
    let limit = state.config.max_prompt_bytes;
    if prompt.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "prompt_too_large",
            format!(
                "prompt is {} bytes; this server accepts at most {limit} (max_prompt_bytes)",
                prompt.len()
            ),
        ));
    }
    Ok(())
}

fn validate(state: &AppState, request: &CreateTask) -> ApiResult<()> {
    let config = &state.config;
    check_prompt(state, &request.prompt)?;
    crate::accounts::repo_host::check_syntax(&request.repo_url, &config.allowed_hosts())
        .map_err(|message| ApiError::unprocessable("invalid_repo_url", message))?;
    if let Some(git_ref) = &request.git_ref {
        check_name("ref", git_ref)?;
    }
    if let Some(model) = &request.model {
        check_name("model", model)?;
    }
    if let Some(secs) = request.timeout_secs {
        if secs == 0 || secs > config.max_timeout_secs {
            return Err(ApiError::unprocessable(
                "invalid_timeout",
                format!(
                    "timeout_secs must be between 1 and {}",
                    config.max_timeout_secs
                ),
            ));
        }
    }
    check_resources(config, &request.resources)?;
    let web = &config.github_web_url;
    if request.open_pull_request && repository_on(web, &request.repo_url).is_none() {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!(
                "open_pull_request needs the https URL of a repository on {web} \
                 ({web}/OWNER/NAME); other repositories end with their diff"
            ),
        ));
    }
    let budget = &request.budget;
    if budget.max_turns == Some(0)
        || budget.max_tokens == Some(0)
        || budget
            .max_usd
            .is_some_and(|usd| !usd.is_finite() || usd <= 0.0)
    {
        return Err(ApiError::unprocessable(
            "invalid_budget",
            "budget limits must be above zero (leave a limit out to have none)",
        ));
    }
    Ok(())
}

/// A pull request is pushed and opened with the owner's GitHub token or the server's: refuse
/// the task now rather than fail it once its work is done.
async fn check_github_token(state: &AppState, owner: berth_proto::UserId) -> ApiResult<()> {
    if state.config.github_token.is_some() || state.store.get_github_token(owner).await?.is_some() {
        return Ok(());
    }
    Err(ApiError::unprocessable(
        "no_github_token",
        "open_pull_request needs a GitHub token: sign in with GitHub (berth login --github), \
         or ask the server's operator to set github_token",
    ))
}

/// Per-task sandbox limits may be lower than the server's, never higher.
fn check_resources(config: &crate::Config, asked: &berth_proto::Resources) -> ApiResult<()> {
    let refuse = |what: String| Err(ApiError::unprocessable("invalid_resources", what));
    if let Some(memory) = asked.memory_mb {
        if !(64..=config.sandbox_memory_mb).contains(&memory) {
            return refuse(format!(
                "resources.memory_mb must be 64 to {}",
                config.sandbox_memory_mb
            ));
        }
    }
    if let Some(cpus) = asked.cpus {
        if !(cpus.is_finite() && cpus >= 0.1 && cpus <= config.sandbox_cpus) {
            return refuse(format!(
                "resources.cpus must be 0.1 to {}",
                config.sandbox_cpus
            ));
        }
    }
    if let Some(pids) = asked.pids {
        if !(16..=config.sandbox_pids).contains(&pids) {
            return refuse(format!(
                "resources.pids must be 16 to {}",
                config.sandbox_pids
            ));
        }
    }
    Ok(())
}

/// A git ref or a model name: short, printable, and never option-like.
fn check_name(field: &str, value: &str) -> ApiResult<()> {
    let bad = value.is_empty()
        || value.len() > 255
        || value.starts_with('-')
        || value.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!("{field} must be 1 to 255 printable characters without spaces, not starting with '-'"),
        ));
    }
    Ok(())
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default().trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(key.to_string()))
}

/// Identifies the request a key was first used for, so a reused key is told apart from a retry.
fn request_hash(request: &impl serde::Serialize) -> String {
    let canonical = serde_json::to_vec(request).unwrap_or_default();
    let digest = Sha256::digest(canonical);
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only tasks in this state.
    status: Option<String>,
    /// `next_cursor` from the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
}

/// The caller's tasks, newest first.
#[utoipa::path(
    get, path = "/v1/tasks", tag = "tasks", params(ListQuery),
    responses(
        (status = 200, body = TaskPage),
        (status = 400, description = "Bad status, cursor or limit", body = ErrorBody),
        (status = 401, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list_tasks(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<TaskPage>> {
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(TaskStatus::parse(text).ok_or_else(|| {
            let known: Vec<&str> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(
                "invalid_status",
                format!("unknown status {text:?}; use one of {}", known.join(", ")),
            )
        })?),
    };
    let before = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let limit = page_size(query.limit, DEFAULT_PAGE, MAX_PAGE)?;
    let mut tasks = state
        .store
        .list_tasks(
            caller.user_id(),
            TaskQuery {
                status,
                before,
                limit: limit + 1,
            },
        )
        .await?;
    let next_cursor = if tasks.len() as i64 > limit {
        tasks.truncate(limit as usize);
        tasks.last().map(|task| encode_cursor(task.id))
    } else {
        None
    };
    Ok(Json(TaskPage { tasks, next_cursor }))
}

fn page_size(asked: Option<i64>, default: i64, max: i64) -> ApiResult<i64> {
    match asked {
        None => Ok(default),
        Some(limit) if (1..=max).contains(&limit) => Ok(limit),
        Some(_) => Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {max}"),
        )),
    }
}

fn encode_cursor(id: TaskId) -> String {
    URL_SAFE_NO_PAD.encode(id.0.as_bytes())
}

fn decode_cursor(cursor: &str) -> ApiResult<TaskId> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| uuid::Uuid::from_slice(&bytes).ok())
        .map(TaskId)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_cursor",
                "cursor is not one this server gave out; start again without it",
            )
        })
}

/// One task of the caller's.
#[utoipa::path(
    get, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses((status = 200, body = Task), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn get_task(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<TaskId>,
) -> ApiResult<Json<Task>> {
    let task = state.store.get_task(caller.user_id(), id).await?;
    task.map(Json).ok_or_else(|| ApiError::not_found("task"))
}

/// Cancel a task: a queued one ends at once, a running one goes to `cancelling` until its
/// runner has stopped it. Cancelling a cancelled task again is harmless.
#[utoipa::path(
    post, path = "/v1/tasks/{id}/cancel", tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 200, body = Task),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The task had already ended otherwise", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn cancel_task(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<TaskId>,
) -> ApiResult<Json<Task>> {
    let task = state.store.cancel_task(caller.user_id(), id).await?;
    let task = task.ok_or_else(|| ApiError::not_found("task"))?;
    if task.status.is_terminal() && task.status != TaskStatus::Cancelled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "task_finished",
            format!(
                "task has already ended ({}); there is nothing to cancel",
                task.status
            ),
        ));
    }
    Ok(Json(task))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Sequence number of the last event already seen (0 for the start).
    after: Option<i64>,
    /// Page size, 1 to 1000 (default 500).
    limit: Option<i64>,
}

/// A page of the task's event log.
#[utoipa::path(
    get, path = "/v1/tasks/{id}/events", tag = "tasks",
    params(("id" = String, Path, description = "Task id"), EventsQuery),
    responses(
        (status = 200, body = EventPage),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<TaskId>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> ApiResult<Json<EventPage>> {
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::bad_request(
            "invalid_after",
            "after must be 0 or more",
        ));
    }
    let limit = page_size(query.limit, DEFAULT_EVENT_PAGE, MAX_EVENT_PAGE)?;
    let page = state
        .store
        .list_events(caller.user_id(), id, after, limit)
        .await?;
    let (events, head_seq) = page.ok_or_else(|| ApiError::not_found("task"))?;
    let next_after = events.last().map_or(after, |event| event.seq);
    Ok(Json(EventPage {
        events,
        next_after,
        head_seq,
    }))
}

/// The change the task made, as a binary-safe git diff.
#[utoipa::path(
    get, path = "/v1/tasks/{id}/diff", tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 200, content_type = "text/x-diff", body = String),
        (status = 404, description = "No such task, or no diff yet", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn get_diff(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<TaskId>,
) -> ApiResult<Response> {
    if state.store.get_task(caller.user_id(), id).await?.is_none() {
        return Err(ApiError::not_found("task"));
    }
    let diff = state
        .store
        .get_diff(caller.user_id(), id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_diff",
                "the task has no diff (yet)",
            )
        })?;
    Ok(([(header::CONTENT_TYPE, "text/x-diff")], diff).into_response())
}

/// Send a follow-up to a task that has ended: it is queued again and continues with the same
/// conversation and the workspace as it left it; its result updates the same branch.
#[utoipa::path(
    post, path = "/v1/tasks/{id}/messages", tag = "tasks", request_body = FollowUp,
    params(
        ("id" = String, Path, description = "Task id"),
        ("Idempotency-Key" = Option<String>, Header,
            description = "Any unique string up to 255 characters; a retry with the same key \
                           queues nothing and returns the task as it is now"),
    ),
    responses(
        (status = 202, description = "Queued again", body = Task),
        (status = 200, description = "Queued earlier by a follow-up with the same Idempotency-Key", body = Task),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The task has not ended yet", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn follow_up(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<TaskId>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<FollowUp>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    check_prompt(&state, &request.prompt)?;
    let idempotency = idempotency_key(&headers)?.map(|key| (key, request_hash(&request)));
    let follow_up = NewFollowUp {
        prompt: request.prompt,
        max_attempts: state.config.max_attempts,
        idempotency,
    };
    let queued = state
        .store
        .continue_task(caller.user_id(), id, follow_up)
        .await?
        .ok_or_else(|| ApiError::not_found("task"))?;
    let status = match queued.created {
        true => StatusCode::ACCEPTED,
        false => StatusCode::OK,
    };
    Ok((status, Json(queued.task)))
}
