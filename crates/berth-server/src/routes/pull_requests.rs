//! `/v1/tasks/{id}/pull_request`: the pull request a task opened, read from GitHub with its
//! checks, and merged from there — always with the task owner's own GitHub token (stored
//! sealed by their GitHub sign-in), so Berth can do on GitHub only what its owner may.
//!
//! A merge names the head the person saw: GitHub refuses it if the branch moved since. It
//! is refused here too while checks of that head fail or run, unless the person says to
//! merge anyway (`ignore_checks`): a confirmation on a phone is a quick tap, and a red check
//! should take a second, deliberate one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_github::{checks, pulls, GitHubError, Rest};
use berth_proto::{
    CheckState, ErrorBody, MergePullRequest, PullRequestState, PullRequestView, TaskId,
};

use crate::accounts::audit;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tasks/{id}/pull_request", get(get_pull_request))
        .route(
            "/v1/tasks/{id}/pull_request/merge",
            post(merge_pull_request),
        )
}

const NOT_READABLE: &str = "`no_pull_request`: the task has no pull request; \
    `pull_request_not_found`: GitHub does not show it to the owner's GitHub token";
const NO_TOKEN: &str = "`no_github_token`: no GitHub token is stored for the caller (sign in \
    with GitHub); `not_on_github`: the pull request is not on this server's GitHub";
const GITHUB_DOWN: &str = "`github_token_refused`: GitHub refused the stored token (sign in \
    with GitHub again); `github_unavailable`: GitHub did not answer";

/// The task's pull request as it stands on GitHub: state, mergeability and its head's checks.
#[utoipa::path(
    get, path = "/v1/tasks/{id}/pull_request", tag = "tasks",
    params(("id" = TaskId, Path, description = "Task id")),
    responses(
        (status = 200, body = PullRequestView),
        (status = 403, description = "`github_forbidden`: GitHub refused the owner's GitHub \
            token there", body = ErrorBody),
        (status = 404, description = NOT_READABLE, body = ErrorBody),
        (status = 409, description = NO_TOKEN, body = ErrorBody),
        (status = 502, description = GITHUB_DOWN, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_pull_request(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<TaskId>,
) -> ApiResult<Json<PullRequestView>> {
    let place = Place::of(&state, &caller, id).await?;
    let view = pulls::view(&place.rest, &place.token, &place.repository, place.number).await;
    Ok(Json(view.map_err(|err| place.refusal(err))?))
}

/// Merge the task's pull request, if its head is still the `sha` the caller saw; answers
/// the pull request as it stands after.
#[utoipa::path(
    post, path = "/v1/tasks/{id}/pull_request/merge", tag = "tasks",
    params(("id" = TaskId, Path, description = "Task id")),
    request_body = MergePullRequest,
    responses(
        (status = 200, body = PullRequestView, description = "Merged"),
        (status = 403, description = "`github_forbidden`: the owner's GitHub token may not \
            merge there (no write access)", body = ErrorBody),
        (status = 404, description = NOT_READABLE, body = ErrorBody),
        (status = 409, description = "`head_moved`: the branch has new commits since `sha`; \
            `not_mergeable`: GitHub will not merge it (conflicts, closed, already merged, or \
            a branch rule); `already_merged`: it is merged already; `checks_not_passed`: a check of `sha` failed or is unfinished and \
            `ignore_checks` was not set; and the 409s of GET", body = ErrorBody),
        (status = 422, description = "`invalid_sha`: `sha` is not a commit id; \
            `github_refused`: GitHub refused the request (its message says why)", body = ErrorBody),
        (status = 502, description = GITHUB_DOWN, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn merge_pull_request(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<TaskId>,
    ApiJson(body): ApiJson<MergePullRequest>,
) -> ApiResult<Json<PullRequestView>> {
    let place = Place::of(&state, &caller, id).await?;
    let is_hex = body.sha.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_hex || !matches!(body.sha.len(), 40 | 64) {
        return Err(ApiError::unprocessable(
            "invalid_sha",
            "sha must be the pull request's head_sha as GET /v1/tasks/{id}/pull_request shows it",
        ));
    }
    if !body.ignore_checks {
        place.check_passed(&body.sha).await?;
    }
    let merged = pulls::merge(
        &place.rest,
        &place.token,
        &place.repository,
        place.number,
        &body.sha,
        body.method,
    )
    .await;
    let merged = match merged {
        Ok(merged) => merged,
        Err(err) => return Err(place.why_not_merged(err).await),
    };
    let detail = serde_json::json!({"task_id": id, "pull_request": place.url, "head": body.sha,
        "merge_commit": merged, "method": body.method.as_str(), "ignore_checks": body.ignore_checks});
    audit(
        &state,
        Some(caller.user_id()),
        "pull_request.merge",
        None,
        detail,
    )
    .await;
    let view = pulls::view(&place.rest, &place.token, &place.repository, place.number).await;
    Ok(Json(view.map_err(|err| place.refusal(err))?))
}

/// Where a task's pull request is, and the owner's token to reach it with.
struct Place {
    rest: Rest,
    token: String,
    url: String,
    repository: String,
    number: u64,
}

impl Place {
    async fn of(state: &AppState, caller: &Caller, id: TaskId) -> ApiResult<Place> {
        let task = state.store.get_task(caller.user_id(), id).await?;
        let task = task.ok_or_else(|| ApiError::not_found("task"))?;
        let Some(url) = task.result.pull_request_url else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_pull_request",
                "this task has no pull request: it was not asked for (open_pull_request), \
                 or the task has not opened one yet",
            ));
        };
        let web_url = &state.shared.github_web_url;
        let Some((repository, number)) = address_of(web_url, &url) else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_on_github",
                format!("the pull request {url} is not on {web_url}, the GitHub Berth talks to"),
            ));
        };
        let sealed = state.store.get_github_token(caller.user_id()).await?;
        let opened = sealed.and_then(|sealed| state.shared.keyring.as_ref()?.open(&sealed).ok());
        let Some(token) = opened else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "no_github_token",
                "no GitHub token is stored for you: sign in with GitHub, and Berth reads and \
                 merges your pull requests with your own access",
            ));
        };
        Ok(Place {
            rest: Rest::new(&state.shared.github_api_url),
            token,
            url,
            repository,
            number,
        })
    }

    /// Refuses unless every check of `sha` passed.
    async fn check_passed(&self, sha: &str) -> ApiResult<()> {
        let found = checks::of_commit(&self.rest, &self.token, &self.repository, sha).await;
        let found = found.map_err(|err| self.refusal(err))?;
        if checks::overall(&found) == CheckState::Success {
            return Ok(());
        }
        let named = |state| {
            let names: Vec<&str> = found
                .iter()
                .filter(|c| c.state == state)
                .map(|c| c.name.as_str())
                .collect();
            names.join(", ")
        };
        let (failed, pending) = (named(CheckState::Failure), named(CheckState::Pending));
        let mut message = format!("the checks of {} have not all passed:", &sha[..7]);
        if !failed.is_empty() {
            message.push_str(&format!(" failed: {failed};"));
        }
        if !pending.is_empty() {
            message.push_str(&format!(" not finished: {pending};"));
        }
        message.push_str(" wait for them, or merge anyway with ignore_checks");
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "checks_not_passed",
            message,
        ))
    }

    /// GitHub's refusal of a merge. Its 405 says the same for a conflict and for a pull
    /// request merged already (by someone else, or by this merge when an answer was lost and
    /// the call retried): the pull request's state tells them apart.
    async fn why_not_merged(&self, err: GitHubError) -> ApiError {
        if err.status == Some(405) {
            let now = pulls::view(&self.rest, &self.token, &self.repository, self.number).await;
            if now.is_ok_and(|now| now.state == PullRequestState::Merged) {
                return ApiError::new(
                    StatusCode::CONFLICT,
                    "already_merged",
                    format!("{}#{} is merged already", self.repository, self.number),
                );
            }
        }
        self.refusal(err)
    }

    /// What GitHub's refusal means for the person, and what they can do about it.
    fn refusal(&self, err: GitHubError) -> ApiError {
        let pull = format!("{}#{}", self.repository, self.number);
        let (repository, said) = (&self.repository, &err.message);
        let (status, code, message) = match err.status {
            Some(401) => (
                StatusCode::BAD_GATEWAY,
                "github_token_refused",
                "GitHub refused your stored GitHub token (revoked or expired): sign in with \
                 GitHub again"
                    .to_string(),
            ),
            Some(403) => (
                StatusCode::FORBIDDEN,
                "github_forbidden",
                format!("GitHub refused your token on {pull} ({said}): it needs write access"),
            ),
            Some(404) => (
                StatusCode::NOT_FOUND,
                "pull_request_not_found",
                format!(
                    "GitHub does not show {pull} to your token: it is gone, or your token \
                    cannot reach {repository}"
                ),
            ),
            Some(405) => (
                StatusCode::CONFLICT,
                "not_mergeable",
                format!(
                    "GitHub will not merge {pull} ({said}): it has conflicts, is closed or \
                    merged, or a branch rule wants a review or a check; see it on GitHub"
                ),
            ),
            Some(409) => (
                StatusCode::CONFLICT,
                "head_moved",
                format!(
                    "{pull} has new commits since you looked ({said}); reload it and \
                    review them before merging"
                ),
            ),
            Some(422) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "github_refused",
                format!("GitHub refused the request for {pull}: {said}"),
            ),
            _ => {
                tracing::warn!(error = %err, pull, "GitHub did not answer about a pull request");
                let message = "GitHub did not answer; try again in a moment".to_string();
                (StatusCode::BAD_GATEWAY, "github_unavailable", message)
            }
        };
        ApiError::new(status, code, message)
    }
}

/// `(owner/name, number)` of a pull request's web address on the GitHub at `web_url`.
fn address_of(web_url: &str, url: &str) -> Option<(String, u64)> {
    let (repository_url, number) = url.trim_end_matches('/').rsplit_once("/pull/")?;
    let number = number.parse().ok()?;
    Some((berth_guard::repository_on(web_url, repository_url)?, number))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_requests_address_names_its_repository_and_number() {
        let on = |url| address_of("https://github.com", url);
        let expected = Some(("acme/widgets".to_string(), 12));
        assert_eq!(on("https://github.com/acme/widgets/pull/12"), expected);
        assert_eq!(on("https://example.com/acme/widgets/pull/12"), None);
        assert_eq!(on("https://github.com/acme/widgets/pull/x"), None);
        assert_eq!(on("https://github.com/acme/widgets/issues/12"), None);
    }
}
