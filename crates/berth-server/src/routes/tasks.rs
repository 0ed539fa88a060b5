//! `/v1/tasks`: create, list, read and cancel tasks, read their event logs and diffs, and send
//! follow-ups. What a request must satisfy is checked in `task_validation`.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_proto::{CreateTask, ErrorBody, EventPage, FollowUp, Task, TaskId, TaskPage, TaskStatus};
use berth_store::{NewFollowUp, NewTask, TaskQuery};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::idempotency::{idempotency_key, request_hash};
use crate::pagination::{
    decode_cursor, encode_cursor, page_size, DEFAULT_EVENT_PAGE, DEFAULT_PAGE, MAX_EVENT_PAGE,
    MAX_PAGE,
};
use crate::task_validation::{check_github_token, check_prompt, validate};
use crate::AppState;

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
    params(("Idempotency-Key" = Option<String>, Header, max_length = 255,
        description = "Any unique string up to 255 characters; a retry with the same key \
                       returns the same task")),
    responses(
        (status = 201, description = "Task created", body = Task,
            headers(("Location" = String, description = "The task's URL"))),
        (status = 200, description = "Task created earlier with the same Idempotency-Key", body = Task),
        (status = 400, description = INVALID_IDEMPOTENCY_KEY, body = ErrorBody),
        (status = 413, description = "`prompt_too_large`: the prompt is over max_prompt_bytes",
            body = ErrorBody),
        (status = 422, description = "`invalid_repo_url`: not a git URL on an allowed host; \
            `invalid_prompt`, `invalid_field`, `invalid_timeout`, `invalid_budget`, \
            `invalid_resources`: a field's value is not allowed (the message says which); \
            `idempotency_key_reused`: the Idempotency-Key was used for another request; \
            `no_github_token`: open_pull_request with no GitHub token to push with",
            body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many tasks created; wait Retry-After seconds",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ),
    security(("bearer" = []))
)]
async fn create_task(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(mut request): ApiJson<CreateTask>,
) -> ApiResult<Response> {
    validate(&state.settings, &state.shared, &mut request)?;
    if request.open_pull_request {
        check_github_token(&state, caller.user_id()).await?;
    }
    let idempotency = idempotency_key(&headers)?.map(|key| (key, request_hash(&request)));
    let created = state
        .store
        .create_task(NewTask {
            owner_id: caller.user_id(),
            request,
            max_attempts: state.settings.max_attempts,
            idempotency,
            github: None,
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

const INVALID_IDEMPOTENCY_KEY: &str =
    "`invalid_idempotency_key`: the Idempotency-Key is empty or over 255 characters";

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only tasks in this state.
    status: Option<String>,
    /// `next_cursor` from the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

/// The caller's tasks, newest first.
#[utoipa::path(
    get, path = "/v1/tasks", tag = "tasks", params(ListQuery),
    responses(
        (status = 200, body = TaskPage),
        (status = 400, description = "`invalid_status`: no such state; `invalid_cursor`: not a \
            cursor this server gave out; `invalid_limit`: limit out of range", body = ErrorBody),
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

/// One task of the caller's.
#[utoipa::path(
    get, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = TaskId, Path, description = "Task id")),
    responses((status = 200, body = Task)),
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
    params(("id" = TaskId, Path, description = "Task id")),
    responses(
        (status = 200, body = Task),
        (status = 409, description = "`task_finished`: the task had already ended otherwise",
            body = ErrorBody),
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
    #[param(minimum = 0)]
    after: Option<i64>,
    /// Page size, 1 to 1000 (default 500).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// A page of the task's event log.
#[utoipa::path(
    get, path = "/v1/tasks/{id}/events", tag = "tasks",
    params(("id" = TaskId, Path, description = "Task id"), EventsQuery),
    responses(
        (status = 200, body = EventPage),
        (status = 400, description = "`invalid_after`: after is below 0; `invalid_limit`: \
            limit out of range", body = ErrorBody),
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
    params(("id" = TaskId, Path, description = "Task id")),
    responses(
        (status = 200, content_type = "text/x-diff", body = String),
        (status = 404, description = "`no_diff`: the task has no diff (yet)", body = ErrorBody),
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
        ("id" = TaskId, Path, description = "Task id"),
        ("Idempotency-Key" = Option<String>, Header, max_length = 255,
            description = "Any unique string up to 255 characters; a retry with the same key \
                           queues nothing and returns the task as it is now"),
    ),
    responses(
        (status = 202, description = "Queued again", body = Task,
            headers(("Berth-Follow-Up-Seq" = i64, description = "The sequence number of this follow-up's first event (its queued status), the same on a retry: follow from after = value - 1 to see all of it"))),
        (status = 200, description = "Queued earlier by a follow-up with the same Idempotency-Key", body = Task,
            headers(("Berth-Follow-Up-Seq" = i64, description = "The sequence number of this follow-up's first event (its queued status), the same on a retry: follow from after = value - 1 to see all of it"))),
        (status = 400, description = INVALID_IDEMPOTENCY_KEY, body = ErrorBody),
        (status = 409, description = "`task_not_finished`: the task has not ended yet",
            body = ErrorBody),
        (status = 413, description = "`prompt_too_large`: the prompt is over max_prompt_bytes",
            body = ErrorBody),
        (status = 422, description = "`invalid_prompt`: the prompt is empty; \
            `idempotency_key_reused`: the Idempotency-Key was used for another prompt",
            body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn follow_up(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<TaskId>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<FollowUp>,
) -> ApiResult<Response> {
    check_prompt(&state.settings, &request.prompt)?;
    let idempotency = idempotency_key(&headers)?.map(|key| (key, request_hash(&request)));
    let follow_up = NewFollowUp {
        prompt: request.prompt,
        max_attempts: state.settings.max_attempts,
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
    let mut response = (status, Json(queued.task)).into_response();
    if let Some(seq) = queued.first_seq {
        response
            .headers_mut()
            .insert(FOLLOW_UP_SEQ_HEADER, HeaderValue::from(seq));
    }
    Ok(response)
}

/// Where a follow-up's events begin, so that a client whose first answer was lost still
/// follows from there, not from wherever the task has got to since.
const FOLLOW_UP_SEQ_HEADER: &str = "berth-follow-up-seq";
