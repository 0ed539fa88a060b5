//! Reading a pull request, the checks of a commit and merging, as GitHub answers them: the
//! combined status (the newest status per context), check runs, and a merge that is refused
//! with 405 when the pull request cannot be merged and 409 when its head is not the `sha`
//! the caller saw. Tests set the statuses and check runs, move a head, and read the merges.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, put};
use axum::Router;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{json_of, lock, message, FakeGitHubApi, Shared};

/// A merge the fake carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merge {
    pub repo: String,
    pub number: u64,
    /// The head that was merged.
    pub sha: String,
    /// `merge`, `squash` or `rebase`.
    pub method: String,
}

#[derive(Default)]
pub(crate) struct Checks {
    /// `(repo, sha, status)`, one per context.
    statuses: Vec<(String, String, Value)>,
    /// `(repo, sha, check run)`, one per name.
    runs: Vec<(String, String, Value)>,
    merges: Vec<Merge>,
}

/// Forty hex digits made from `seed`, shaped like a commit id.
pub fn fake_sha(seed: &str) -> String {
    format!("{:x}", Sha256::digest(seed.as_bytes()))[..40].to_string()
}

impl FakeGitHubApi {
    /// Posts commit status `context` on `sha` (`success`, `failure`, `error` or `pending`),
    /// replacing an earlier one of the same context, as GitHub's combined status shows.
    pub fn set_status(&self, repo: &str, sha: &str, context: &str, state: &str, url: &str) {
        let status = json!({"context": context, "state": state, "target_url": url,
            "description": format!("{context} is {state}")});
        let statuses = &mut lock(&self.inner).checks.statuses;
        statuses.retain(|(r, s, old)| !(r == repo && s == sha && old["context"] == context));
        statuses.push((repo.into(), sha.into(), status));
    }

    /// Sets check run `name` on `sha`: `status` is `queued`, `in_progress` or `completed`,
    /// and a completed run has a `conclusion` (`success`, `failure`, `neutral`, …).
    pub fn set_check_run(
        &self,
        repo: &str,
        sha: &str,
        name: &str,
        status: &str,
        conclusion: Option<&str>,
    ) {
        let mut inner = lock(&self.inner);
        let url = format!("{}/{repo}/runs/{}", inner.url, fake_sha(name));
        let run = json!({"name": name, "status": status, "conclusion": conclusion,
            "head_sha": sha, "html_url": url, "details_url": url});
        let runs = &mut inner.checks.runs;
        runs.retain(|(r, s, old)| !(r == repo && s == sha && old["name"] == name));
        runs.push((repo.into(), sha.into(), run));
    }

    /// Someone pushes to the pull request's branch: its head becomes a new commit, returned.
    pub fn push_to_pull(&self, repo: &str, number: u64) -> String {
        let mut inner = lock(&self.inner);
        let pull = inner
            .pulls
            .iter_mut()
            .find(|p| p.repo == repo && p.number == number);
        let pull = pull.expect("the pull request");
        pull.head_sha = fake_sha(&format!("a push onto {}", pull.head_sha));
        pull.head_sha.clone()
    }

    /// Whether GitHub would merge the pull request (`Some(false)`: conflicts or a branch
    /// rule; `None`: not computed yet).
    pub fn set_mergeable(&self, repo: &str, number: u64, mergeable: Option<bool>) {
        let mut inner = lock(&self.inner);
        let pull = inner
            .pulls
            .iter_mut()
            .find(|p| p.repo == repo && p.number == number);
        pull.expect("the pull request").mergeable = mergeable;
    }

    /// The merges carried out so far, oldest first.
    pub fn merges(&self) -> Vec<Merge> {
        lock(&self.inner).checks.merges.clone()
    }
}

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/repos/{owner}/{repo}/pulls/{number}", get(pull))
        .route("/repos/{owner}/{repo}/pulls/{number}/merge", put(merge))
        .route(
            "/repos/{owner}/{repo}/commits/{reference}/status",
            get(combined_status),
        )
        .route(
            "/repos/{owner}/{repo}/commits/{reference}/check-runs",
            get(check_runs),
        )
}

fn not_found() -> Response {
    message(
        StatusCode::NOT_FOUND,
        json!({"message": "Not Found", "status": "404"}),
    )
}

async fn pull(
    State(inner): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
) -> Response {
    let inner = lock(&inner);
    let repo = format!("{owner}/{repo}");
    match inner
        .pulls
        .iter()
        .find(|p| p.repo == repo && p.number == number)
    {
        Some(pull) => message(StatusCode::OK, json_of(&inner.url, pull)),
        None => not_found(),
    }
}

async fn merge(
    State(inner): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut inner = lock(&inner);
    let repo = format!("{owner}/{repo}");
    let Some(pull) = inner
        .pulls
        .iter_mut()
        .find(|p| p.repo == repo && p.number == number)
    else {
        return not_found();
    };
    let method = body["merge_method"].as_str().unwrap_or("merge").to_string();
    if !["merge", "squash", "rebase"].contains(&method.as_str()) {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest",
                "field": "merge_method", "code": "invalid"}]}),
        );
    }
    if pull.merged || pull.mergeable != Some(true) {
        return message(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"message": "Pull Request is not mergeable"}),
        );
    }
    if body["sha"].as_str().is_some_and(|sha| sha != pull.head_sha) {
        return message(
            StatusCode::CONFLICT,
            json!({"message": "Head branch was modified. Review and try the merge again."}),
        );
    }
    pull.merged = true;
    let merged = Merge {
        repo,
        number,
        sha: pull.head_sha.clone(),
        method,
    };
    let merge_sha = fake_sha(&format!("merge of {}", merged.sha));
    inner.checks.merges.push(merged);
    message(
        StatusCode::OK,
        json!({"sha": merge_sha, "merged": true, "message": "Pull Request successfully merged"}),
    )
}

/// A branch name stands for the head of the pull request from it; anything else is a sha.
fn commit_of(inner: &super::Inner, repo: &str, reference: &str) -> String {
    let head = inner
        .pulls
        .iter()
        .find(|p| p.repo == repo && p.head == reference);
    head.map_or_else(|| reference.to_string(), |pull| pull.head_sha.clone())
}

fn of_commit(found: &[(String, String, Value)], repo: &str, sha: &str) -> Vec<Value> {
    let on_commit = found.iter().filter(|(r, s, _)| r == repo && s == sha);
    on_commit.map(|(_, _, value)| value.clone()).collect()
}

async fn combined_status(
    State(inner): State<Shared>,
    Path((owner, repo, reference)): Path<(String, String, String)>,
) -> Response {
    let inner = lock(&inner);
    let repo = format!("{owner}/{repo}");
    let sha = commit_of(&inner, &repo, &reference);
    let statuses = of_commit(&inner.checks.statuses, &repo, &sha);
    let has = |state: &str| statuses.iter().any(|s| s["state"] == state);
    let state = if has("failure") || has("error") {
        "failure"
    } else if has("pending") || statuses.is_empty() {
        "pending"
    } else {
        "success"
    };
    message(
        StatusCode::OK,
        json!({"state": state, "sha": sha, "total_count": statuses.len(), "statuses": statuses}),
    )
}

async fn check_runs(
    State(inner): State<Shared>,
    Path((owner, repo, reference)): Path<(String, String, String)>,
) -> Response {
    let inner = lock(&inner);
    let repo = format!("{owner}/{repo}");
    let sha = commit_of(&inner, &repo, &reference);
    let runs = of_commit(&inner.checks.runs, &repo, &sha);
    message(
        StatusCode::OK,
        json!({"total_count": runs.len(), "check_runs": runs}),
    )
}
