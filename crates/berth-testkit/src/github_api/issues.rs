//! Issues, conversations and reviews in the fake, and the calls an App makes on them: an
//! issue, its comments (list, create, edit), reactions, review comments, collaborator
//! permissions and organisation membership. The tests set the scene with the methods on [`FakeGitHubApi`];
//! Berth's calls change it, and the tests read the result.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{lock, message, FakeGitHubApi, Shared};

/// A GitHub account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub login: String,
    /// `User` or `Bot`.
    pub kind: String,
}

impl Account {
    pub(crate) fn json(&self) -> Value {
        json!({"login": self.login, "id": self.id, "type": self.kind})
    }
}

#[derive(Clone, Debug)]
pub struct Issue {
    pub repo: String,
    pub number: u64,
    pub title: String,
    pub body: String,
    pub author: Account,
}

/// A comment of an issue's or a pull request's conversation.
#[derive(Clone, Debug)]
pub struct IssueComment {
    pub id: u64,
    pub repo: String,
    pub number: u64,
    pub author: Account,
    pub body: String,
    /// Made by the App (Berth), as `performed_via_github_app` says.
    pub by_app: bool,
    /// Edits so far.
    pub edits: usize,
}

#[derive(Clone, Debug)]
pub struct ReviewComment {
    pub id: u64,
    pub repo: String,
    pub pull: u64,
    pub review: u64,
    pub author: Account,
    pub path: String,
    pub line: u64,
    pub body: String,
    pub in_reply_to: Option<u64>,
}

/// A reaction Berth made: on `issue:N` or `comment:ID`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reaction {
    pub repo: String,
    pub on: String,
    pub content: String,
}

#[derive(Default)]
pub(crate) struct World {
    pub(crate) accounts: HashMap<String, Account>,
    pub(crate) issues: Vec<Issue>,
    pub(crate) comments: Vec<IssueComment>,
    pub(crate) review_comments: Vec<ReviewComment>,
    pub(crate) reactions: Vec<Reaction>,
    /// `(repo, login)` → `admin`, `write`, `read`.
    permissions: HashMap<(String, String), String>,
    org_members: Vec<(String, String)>,
    next_id: u64,
}

impl World {
    pub(crate) fn issues_in(&self, repo: &str) -> u64 {
        self.issues
            .iter()
            .filter(|issue| issue.repo == repo)
            .count() as u64
    }

    pub(crate) fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        1000 + self.next_id
    }

    pub(crate) fn account(&mut self, login: &str) -> Account {
        let next = self.accounts.len() as i64 + 1;
        self.accounts
            .entry(login.to_string())
            .or_insert_with(|| Account {
                id: 5000 + next,
                login: login.to_string(),
                kind: if login.ends_with("[bot]") {
                    "Bot"
                } else {
                    "User"
                }
                .into(),
            })
            .clone()
    }
}

pub(crate) fn comment_json(url: &str, comment: &IssueComment, app_id: u64) -> Value {
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut found = json!({
        "id": comment.id,
        "body": comment.body,
        "user": comment.author.json(),
        "html_url": format!("{url}/{}/issues/{}#issuecomment-{}", comment.repo, comment.number, comment.id),
        "created_at": at, "updated_at": at,
        "author_association": "CONTRIBUTOR",
    });
    if comment.by_app {
        found["performed_via_github_app"] = json!({"id": app_id, "slug": "berth"});
    }
    found
}

impl FakeGitHubApi {
    /// A GitHub user (or a bot, when the login ends with `[bot]`), made on first use.
    pub fn account(&self, login: &str) -> Account {
        lock(&self.inner).world.account(login)
    }

    /// Gives `login` this permission on `repo`: `admin`, `write` or `read` (the default).
    pub fn grant(&self, repo: &str, login: &str, permission: &str) {
        lock(&self.inner)
            .world
            .permissions
            .insert((repo.into(), login.into()), permission.into());
    }

    pub fn add_org_member(&self, org: &str, login: &str) {
        lock(&self.inner)
            .world
            .org_members
            .push((org.into(), login.into()));
    }

    /// Opens an issue; its number.
    pub fn open_issue(&self, repo: &str, author: &str, title: &str, body: &str) -> u64 {
        let mut inner = lock(&self.inner);
        let pulls = inner.pulls.iter().filter(|p| p.repo == repo).count() as u64;
        let author = inner.world.account(author);
        let number = pulls + inner.world.issues_in(repo) + 1;
        inner.world.issues.push(Issue {
            repo: repo.into(),
            number,
            title: title.into(),
            body: body.into(),
            author,
        });
        number
    }

    /// Someone comments on an issue or a pull request; the comment's id.
    pub fn add_comment(&self, repo: &str, number: u64, author: &str, body: &str) -> u64 {
        let mut inner = lock(&self.inner);
        let author = inner.world.account(author);
        let id = inner.world.fresh_id();
        inner.world.comments.push(IssueComment {
            id,
            repo: repo.into(),
            number,
            author,
            body: body.into(),
            by_app: false,
            edits: 0,
        });
        id
    }

    /// The conversation of an issue or a pull request, oldest first, Berth's comments included.
    pub fn comments(&self, repo: &str, number: u64) -> Vec<IssueComment> {
        lock(&self.inner)
            .world
            .comments
            .iter()
            .filter(|c| c.repo == repo && c.number == number)
            .cloned()
            .collect()
    }

    /// The reactions made so far.
    pub fn reactions(&self) -> Vec<Reaction> {
        lock(&self.inner).world.reactions.clone()
    }

    pub fn issue(&self, repo: &str, number: u64) -> Option<Issue> {
        lock(&self.inner)
            .world
            .issues
            .iter()
            .find(|issue| issue.repo == repo && issue.number == number)
            .cloned()
    }
}

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/repos/{owner}/{repo}/collaborators/{login}/permission",
            get(permission),
        )
        .route("/repos/{owner}/{repo}/issues/{number}", get(issue))
        .route(
            "/repos/{owner}/{repo}/issues/{number}/comments",
            get(list_comments).post(create_comment),
        )
        .route(
            "/repos/{owner}/{repo}/issues/comments/{id}",
            patch(edit_comment),
        )
        .route(
            "/repos/{owner}/{repo}/issues/{number}/reactions",
            post(react_to_issue),
        )
        .route(
            "/repos/{owner}/{repo}/issues/comments/{id}/reactions",
            post(react_to_comment),
        )
        .route(
            "/repos/{owner}/{repo}/pulls/{number}/comments",
            get(list_review_comments),
        )
        .route("/orgs/{org}/members/{login}", get(org_member))
}

async fn permission(
    State(inner): State<Shared>,
    Path((owner, repo, login)): Path<(String, String, String)>,
) -> Response {
    let mut inner = lock(&inner);
    let account = inner.world.account(&login);
    let permission = inner
        .world
        .permissions
        .get(&(format!("{owner}/{repo}"), login.clone()))
        .cloned()
        .unwrap_or_else(|| "read".into());
    message(
        StatusCode::OK,
        json!({"permission": permission, "role_name": permission, "user": account.json()}),
    )
}

async fn issue(
    State(inner): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
) -> Response {
    let inner = lock(&inner);
    let repo = format!("{owner}/{repo}");
    let known = inner
        .world
        .issues
        .iter()
        .any(|i| i.repo == repo && i.number == number)
        || inner
            .pulls
            .iter()
            .any(|p| p.repo == repo && p.number == number);
    match known {
        true => message(StatusCode::OK, inner.issue_json(&repo, number)),
        false => message(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
    }
}

/// Only the first page holds anything: the fake's threads are short.
fn first_page(query: &HashMap<String, String>) -> bool {
    query.get("page").is_none_or(|page| page == "1")
}

async fn list_comments(
    State(inner): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let inner = lock(&inner);
    let app_id = inner.app.as_ref().map_or(0, |app| app.app_id);
    let repo = format!("{owner}/{repo}");
    let found: Vec<Value> = inner
        .world
        .comments
        .iter()
        .filter(|c| first_page(&query) && c.repo == repo && c.number == number)
        .map(|c| comment_json(&inner.url, c, app_id))
        .collect();
    message(StatusCode::OK, Value::Array(found))
}

async fn create_comment(
    State(inner): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Response {
    let mut inner = lock(&inner);
    let app_id = inner.app.as_ref().map_or(0, |app| app.app_id);
    let author = inner.world.account("berth[bot]");
    let id = inner.world.fresh_id();
    let comment = IssueComment {
        id,
        repo: format!("{owner}/{repo}"),
        number,
        author,
        body: body["body"].as_str().unwrap_or_default().to_string(),
        by_app: true,
        edits: 0,
    };
    let answer = comment_json(&inner.url, &comment, app_id);
    inner.world.comments.push(comment);
    message(StatusCode::CREATED, answer)
}

async fn edit_comment(
    State(inner): State<Shared>,
    Path((_owner, _repo, id)): Path<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Response {
    let mut inner = lock(&inner);
    let app_id = inner.app.as_ref().map_or(0, |app| app.app_id);
    let Some(comment) = inner.world.comments.iter_mut().find(|c| c.id == id) else {
        return message(StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
    };
    if !comment.by_app {
        return message(
            StatusCode::FORBIDDEN,
            json!({"message": "Resource not accessible by integration"}),
        );
    }
    comment.body = body["body"].as_str().unwrap_or_default().to_string();
    comment.edits += 1;
    let comment = comment.clone();
    message(StatusCode::OK, comment_json(&inner.url, &comment, app_id))
}

fn reaction(inner: &Shared, repo: String, on: String, body: &Value) -> Response {
    let content = body["content"].as_str().unwrap_or_default().to_string();
    lock(inner).world.reactions.push(Reaction {
        repo,
        on,
        content: content.clone(),
    });
    message(StatusCode::CREATED, json!({"id": 1, "content": content}))
}

async fn react_to_issue(
    State(inner): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Response {
    reaction(
        &inner,
        format!("{owner}/{repo}"),
        format!("issue:{number}"),
        &body,
    )
}

async fn react_to_comment(
    State(inner): State<Shared>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Response {
    reaction(
        &inner,
        format!("{owner}/{repo}"),
        format!("comment:{id}"),
        &body,
    )
}

async fn list_review_comments(
    State(inner): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let inner = lock(&inner);
    let repo = format!("{owner}/{repo}");
    let found: Vec<Value> = inner
        .world
        .review_comments
        .iter()
        .filter(|c| first_page(&query) && c.repo == repo && c.pull == number)
        .map(|c| {
            json!({
                "id": c.id, "pull_request_review_id": c.review, "user": c.author.json(),
                "body": c.body, "path": c.path, "line": c.line, "original_line": c.line,
                "in_reply_to_id": c.in_reply_to, "diff_hunk": "@@ -1 +1 @@",
            })
        })
        .collect();
    message(StatusCode::OK, Value::Array(found))
}

async fn org_member(
    State(inner): State<Shared>,
    Path((org, login)): Path<(String, String)>,
) -> Response {
    let member = lock(&inner).world.org_members.contains(&(org, login));
    match member {
        true => axum::response::IntoResponse::into_response(StatusCode::NO_CONTENT),
        false => message(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
    }
}
