//! A fake of GitHub's REST API for pull requests, over real HTTP: create (with GitHub's 401,
//! 403 without a User-Agent, and 422 answers) and list by head branch.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequest {
    /// `owner/name`
    pub repo: String,
    pub number: u64,
    pub title: String,
    pub body: String,
    /// The branch name, without `owner:`.
    pub head: String,
    pub base: String,
    pub html_url: String,
}

type BranchCheck = Box<dyn Fn(&str, &str) -> bool + Send + Sync>;

struct Inner {
    token: String,
    url: String,
    pulls: Vec<PullRequest>,
    branch_exists: Option<BranchCheck>,
}

type Shared = Arc<Mutex<Inner>>;

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
    /// Starts the fake; requests must carry `token` as a bearer token.
    pub async fn start(token: &str) -> FakeGitHubApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let inner = Arc::new(Mutex::new(Inner {
            token: token.to_string(),
            url: url.clone(),
            pulls: Vec::new(),
            branch_exists: None,
        }));
        let app = Router::new()
            .route("/repos/{owner}/{repo}/pulls", get(list).post(create))
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake GitHub API");
        });
        FakeGitHubApi { url, inner, server }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Makes pull requests from branches `check(owner/repo, branch)` denies fail with 422.
    pub fn with_branches(&self, check: impl Fn(&str, &str) -> bool + Send + Sync + 'static) {
        self.inner.lock().expect("lock").branch_exists = Some(Box::new(check));
    }

    pub fn pulls(&self) -> Vec<PullRequest> {
        self.inner.lock().expect("lock").pulls.clone()
    }
}

fn message(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// GitHub's own checks, in its order: a User-Agent, then the token.
fn refused(inner: &Inner, headers: &HeaderMap) -> Option<Response> {
    if !headers.contains_key("user-agent") {
        return Some(message(
            StatusCode::FORBIDDEN,
            json!({"message": "Request forbidden by administrative rules. Please make sure your request has a User-Agent header"}),
        ));
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let given = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("token "));
    (given != Some(inner.token.as_str())).then(|| {
        message(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Bad credentials", "status": "401"}),
        )
    })
}

fn json_of(inner: &Inner, pull: &PullRequest) -> Value {
    let owner = pull.repo.split('/').next().unwrap_or_default();
    json!({
        "id": pull.number * 1000,
        "number": pull.number,
        "state": "open",
        "title": pull.title,
        "body": pull.body,
        "html_url": pull.html_url,
        "url": format!("{}/repos/{}/pulls/{}", inner.url, pull.repo, pull.number),
        "head": {"ref": pull.head, "label": format!("{owner}:{}", pull.head)},
        "base": {"ref": pull.base},
    })
}

async fn create(
    State(inner): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut inner = inner.lock().expect("lock");
    if let Some(refusal) = refused(&inner, &headers) {
        return refusal;
    }
    let field = |name: &str| body[name].as_str().unwrap_or_default().to_string();
    let (title, head, base) = (field("title"), field("head"), field("base"));
    let missing: Vec<Value> = [("title", &title), ("head", &head), ("base", &base)]
        .iter()
        .filter(|(_, value)| value.is_empty())
        .map(|(name, _)| json!({"resource": "PullRequest", "field": name, "code": "missing_field"}))
        .collect();
    if !missing.is_empty() {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": "Validation Failed", "errors": missing}),
        );
    }
    let repository = format!("{owner}/{repo}");
    let branch = head
        .split_once(':')
        .map_or(head.as_str(), |(_, branch)| branch)
        .to_string();
    let exists = inner
        .branch_exists
        .as_ref()
        .is_none_or(|check| check(&repository, &branch));
    if !exists {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": "Validation Failed",
                   "errors": [{"resource": "PullRequest", "field": "head", "code": "invalid"}]}),
        );
    }
    if inner
        .pulls
        .iter()
        .any(|pull| pull.repo == repository && pull.head == branch)
    {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom",
                   "message": format!("A pull request already exists for {owner}:{branch}.")}]}),
        );
    }
    let number = inner.pulls.len() as u64 + 1;
    let pull = PullRequest {
        html_url: format!("{}/{repository}/pull/{number}", inner.url),
        repo: repository,
        number,
        title,
        body: field("body"),
        head: branch,
        base,
    };
    let answer = json_of(&inner, &pull);
    inner.pulls.push(pull);
    message(StatusCode::CREATED, answer)
}

async fn list(
    State(inner): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let inner = inner.lock().expect("lock");
    if let Some(refusal) = refused(&inner, &headers) {
        return refusal;
    }
    let repository = format!("{owner}/{repo}");
    let head = query.get("head").map(|head| {
        head.split_once(':')
            .map_or(head.as_str(), |(_, b)| b)
            .to_string()
    });
    let found: Vec<Value> = inner
        .pulls
        .iter()
        .filter(|pull| pull.repo == repository)
        .filter(|pull| head.as_ref().is_none_or(|head| &pull.head == head))
        .map(|pull| json_of(&inner, pull))
        .collect();
    message(StatusCode::OK, Value::Array(found))
}
