//! A fake of GitHub's REST API, over real HTTP: pull requests (create, with GitHub's 401, 403
//! without a User-Agent, and 422 answers, and list by head branch and state; read, their
//! checks and merging in [`merging`]), and, once
//! [`FakeGitHubApi::install_app`] is called, a GitHub App: JWT-authenticated installation
//! tokens scoped to repositories that expire, issues and their comments, reactions, review
//! comments, collaborator permissions and organisation members ([`app`], [`issues`]), and
//! signed webhook deliveries of real shape ([`deliveries`]). Every request is recorded.

pub mod app;
pub mod deliveries;
pub mod issues;
pub mod merging;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequest {
    /// Unique across all repositories of this fake.
    pub id: u64,
    /// `owner/name`
    pub repo: String,
    /// Counts from 1 in each repository, as on GitHub.
    pub number: u64,
    pub title: String,
    pub body: String,
    /// The branch name, without `owner:`.
    pub head: String,
    pub base: String,
    pub draft: bool,
    pub html_url: String,
    /// The head commit; a test moves it with [`FakeGitHubApi::push_to_pull`].
    pub head_sha: String,
    /// `None` while GitHub would still be computing it; tests set it.
    pub mergeable: Option<bool>,
    pub merged: bool,
}

/// One request as the fake received it, for asserting what a client sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub user_agent: Option<String>,
    /// The `X-GitHub-Api-Version` header.
    pub api_version: Option<String>,
}

type BranchCheck = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

pub(crate) struct Inner {
    token: String,
    url: String,
    pulls: Vec<PullRequest>,
    requests: Vec<ApiRequest>,
    branch_exists: Option<BranchCheck>,
    pub(crate) app: Option<app::AppSide>,
    pub(crate) world: issues::World,
    pub(crate) checks: merging::Checks,
}

pub(crate) type Shared = Arc<Mutex<Inner>>;

pub(crate) fn lock(inner: &Shared) -> MutexGuard<'_, Inner> {
    inner.lock().expect("fake GitHub API lock")
}

pub struct FakeGitHubApi {
    url: String,
    inner: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitHubApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeGitHubApi {
    /// Starts the fake; requests must carry `token` as `Bearer <token>` or `token <token>`.
    pub async fn start(token: &str) -> FakeGitHubApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let inner = Arc::new(Mutex::new(Inner {
            token: token.to_string(),
            url: url.clone(),
            pulls: Vec::new(),
            requests: Vec::new(),
            branch_exists: None,
            app: None,
            world: issues::World::default(),
            checks: merging::Checks::default(),
        }));
        let app = Router::new()
            .route("/repos/{owner}/{repo}/pulls", get(list).post(create))
            .merge(app::routes())
            .merge(issues::routes())
            .merge(merging::routes())
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(inner.clone(), gate))
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake GitHub API");
        });
        FakeGitHubApi { url, inner, server }
    }

    /// `http://127.0.0.1:PORT`, the API's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Makes pull requests from branches `check(owner/repo, branch)` denies fail with 422;
    /// without it, every head branch exists.
    pub fn with_branches(&self, check: impl Fn(&str, &str) -> bool + Send + Sync + 'static) {
        lock(&self.inner).branch_exists = Some(Arc::new(check));
    }

    /// The pull requests created so far, oldest first.
    pub fn pulls(&self) -> Vec<PullRequest> {
        lock(&self.inner).pulls.clone()
    }

    /// Every request received so far, refused ones included.
    pub fn requests(&self) -> Vec<ApiRequest> {
        lock(&self.inner).requests.clone()
    }
}

pub(crate) fn message(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn validation_failed(errors: Value) -> Response {
    message(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"message": "Validation Failed", "errors": errors}),
    )
}

/// Records the request, then applies GitHub's own checks in its order: a User-Agent, then
/// the token.
async fn gate(State(inner): State<Shared>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    let seen = ApiRequest {
        method: request.method().to_string(),
        path: request
            .uri()
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default(),
        user_agent: header("user-agent"),
        api_version: header("x-github-api-version"),
    };
    let refusal = {
        let mut inner = lock(&inner);
        let path = seen.path.clone();
        inner.requests.push(seen);
        match (inner.app.as_ref(), refused(&inner.token, headers)) {
            (_, None) => None,
            (Some(app), Some(refusal)) => app.refused(&path, headers).map(|_| refusal),
            (None, refusal) => refusal,
        }
    };
    match refusal {
        Some(refusal) => refusal,
        None => next.run(request).await,
    }
}

fn refused(token: &str, headers: &HeaderMap) -> Option<Response> {
    if !headers.contains_key("user-agent") {
        return Some(message(
            StatusCode::FORBIDDEN,
            json!({"message": "Request forbidden by administrative rules. Please make sure your request has a User-Agent header"}),
        ));
    }
    let auth = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let given = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("token "));
    (given != Some(token)).then(|| {
        message(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Bad credentials", "status": "401"}),
        )
    })
}

async fn not_found() -> Response {
    message(
        StatusCode::NOT_FOUND,
        json!({"message": "Not Found", "status": "404"}),
    )
}

/// `branch` from `owner:branch` or `branch`.
fn branch_of(head: &str) -> &str {
    head.split_once(':').map_or(head, |(_, branch)| branch)
}

pub(crate) fn json_of(url: &str, pull: &PullRequest) -> Value {
    let owner = pull.repo.split('/').next().unwrap_or_default();
    json!({
        "id": pull.id,
        "number": pull.number,
        "state": if pull.merged { "closed" } else { "open" },
        "merged": pull.merged,
        "mergeable": if pull.merged { None } else { pull.mergeable },
        "draft": pull.draft,
        "title": pull.title,
        "body": pull.body,
        "html_url": pull.html_url,
        "url": format!("{url}/repos/{}/pulls/{}", pull.repo, pull.number),
        "head": {"ref": pull.head, "label": format!("{owner}:{}", pull.head), "sha": pull.head_sha},
        "base": {"ref": pull.base},
    })
}

async fn create(
    State(inner): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return message(
            StatusCode::BAD_REQUEST,
            json!({"message": "Problems parsing JSON"}),
        );
    };
    let field = |name: &str| body[name].as_str().unwrap_or_default().to_string();
    let (title, head, base) = (field("title"), field("head"), field("base"));
    let missing: Vec<Value> = [("title", &title), ("head", &head), ("base", &base)]
        .iter()
        .filter(|(_, value)| value.is_empty())
        .map(|(name, _)| json!({"resource": "PullRequest", "field": name, "code": "missing_field"}))
        .collect();
    if !missing.is_empty() {
        return validation_failed(Value::Array(missing));
    }
    let repository = format!("{owner}/{repo}");
    let branch = branch_of(&head).to_string();
    // The check may run git; keep it off the lock and off the runtime's threads.
    let check = lock(&inner).branch_exists.clone();
    if let Some(check) = check {
        let (repository, branch) = (repository.clone(), branch.clone());
        let exists = tokio::task::spawn_blocking(move || check(&repository, &branch))
            .await
            .expect("branch check");
        if !exists {
            return validation_failed(
                json!([{"resource": "PullRequest", "field": "head", "code": "invalid"}]),
            );
        }
    }
    let mut inner = lock(&inner);
    let in_repository = || inner.pulls.iter().filter(|pull| pull.repo == repository);
    if in_repository().any(|pull| pull.head == branch) {
        return validation_failed(json!([{"resource": "PullRequest", "code": "custom",
            "message": format!("A pull request already exists for {owner}:{branch}.")}]));
    }
    let number = in_repository().count() as u64 + inner.world.issues_in(&repository) + 1;
    let pull = PullRequest {
        id: inner.pulls.len() as u64 + 1,
        html_url: format!("{}/{repository}/pull/{number}", inner.url),
        repo: repository,
        number,
        title,
        body: field("body"),
        head: branch,
        base,
        draft: body["draft"].as_bool().unwrap_or(false),
        head_sha: merging::fake_sha(&format!("head of pull request {}", inner.pulls.len() + 1)),
        mergeable: Some(true),
        merged: false,
    };
    let answer = json_of(&inner.url, &pull);
    inner.pulls.push(pull);
    message(StatusCode::CREATED, answer)
}

async fn list(
    State(inner): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    // Pull requests here close only by merging.
    let wanted = |pull: &PullRequest| match query.get("state").map(String::as_str) {
        Some("closed") => pull.merged,
        Some("all") => true,
        _ => !pull.merged,
    };
    let inner = lock(&inner);
    let repository = format!("{owner}/{repo}");
    let head = query.get("head").map(|head| branch_of(head));
    let found: Vec<Value> = inner
        .pulls
        .iter()
        .filter(|pull| pull.repo == repository)
        .filter(|pull| head.is_none_or(|head| pull.head == head) && wanted(pull))
        .map(|pull| json_of(&inner.url, pull))
        .collect();
    message(StatusCode::OK, Value::Array(found))
}
