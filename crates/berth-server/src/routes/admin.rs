//! `/v1/admin/…`: what admins see and do: every user, disabling one, the audit log.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_proto::{ErrorBody, TaskStatus, UserId};
use berth_store::{Account, AuditEntry, TaskQuery};
use serde::{Deserialize, Serialize};

use crate::accounts::audit;
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::pagination::page_size;
use crate::AppState;

/// Audit entries per answer, unless the client asks otherwise, and at most.
const DEFAULT_AUDIT_PAGE: i64 = 100;
const MAX_AUDIT_PAGE: i64 = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/users", get(list_users))
        .route("/v1/admin/users/{id}/disable", post(disable_user))
        .route("/v1/admin/audit", get(list_audit))
}

/// A user as admins see it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserView {
    id: UserId,
    name: String,
    github_id: Option<i64>,
    login: Option<String>,
    is_admin: bool,
    /// When the user was disabled (ms since the epoch), if they are.
    disabled_at: Option<i64>,
    created_at: i64,
}

impl From<Account> for UserView {
    fn from(a: Account) -> Self {
        Self {
            id: a.id,
            name: a.name,
            github_id: a.github_id,
            login: a.login,
            is_admin: a.is_admin,
            disabled_at: a.disabled_at,
            created_at: a.created_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserList {
    users: Vec<UserView>,
}

/// Every user (admins only).
#[utoipa::path(get, path = "/v1/admin/users", tag = "admin",
    responses((status = 200, body = UserList)),
    security(("bearer" = ["admin"])))]
pub(crate) async fn list_users(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<UserList>> {
    let users = state.store.list_accounts().await?;
    Ok(Json(UserList {
        users: users.into_iter().map(UserView::from).collect(),
    }))
}

/// Disables a user: their tokens and sessions stop at once, and their unfinished tasks are
/// cancelled.
#[utoipa::path(post, path = "/v1/admin/users/{id}/disable", tag = "admin",
    params(("id" = UserId, Path, description = "User id")),
    responses((status = 200, body = UserView)),
    security(("bearer" = ["admin"])))]
pub(crate) async fn disable_user(
    State(state): State<AppState>,
    Admin(actor): Admin,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<Json<UserView>> {
    let account = state
        .store
        .disable_user(id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let mut cancelled = 0;
    for status in [TaskStatus::Queued, TaskStatus::Running] {
        loop {
            let query = TaskQuery {
                status: Some(status),
                before: None,
                limit: 200,
            };
            let tasks = state.store.list_tasks(id, query).await?;
            if tasks.is_empty() {
                break;
            }
            for task in &tasks {
                state.store.cancel_task(id, task.id).await?;
                cancelled += 1;
            }
            if tasks.len() < 200 {
                break;
            }
        }
    }
    audit(
        &state,
        Some(actor.id),
        "admin.disable_user",
        Some(id),
        serde_json::json!({"login": account.login, "tasks_cancelled": cancelled}),
    )
    .await;
    Ok(Json(account.into()))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// How many entries, newest first: 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// One line of the audit log.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditView {
    seq: i64,
    actor_id: Option<UserId>,
    action: String,
    subject_id: Option<UserId>,
    detail: serde_json::Value,
    created_at: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditList {
    entries: Vec<AuditView>,
}

/// The audit log, newest first (admins only).
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", params(AuditQuery),
    responses((status = 200, body = AuditList),
        (status = 400, description = "`invalid_limit`: limit out of range", body = ErrorBody)),
    security(("bearer" = ["admin"])))]
pub(crate) async fn list_audit(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditList>> {
    let limit = page_size(query.limit, DEFAULT_AUDIT_PAGE, MAX_AUDIT_PAGE)?;
    let entries = state.store.list_audit(limit).await?;
    let entries = entries
        .into_iter()
        .map(|e: AuditEntry| AuditView {
            seq: e.seq,
            actor_id: e.actor_id,
            action: e.action,
            subject_id: e.subject_id,
            detail: e.detail,
            created_at: e.created_at,
        })
        .collect();
    Ok(Json(AuditList { entries }))
}
