//! The calls Berth makes on one repository as the App's installation: who may write to it,
//! the issue and review threads it reads, and the reactions and comments it answers with.
//! Each call uses the repository's installation token and, if GitHub refuses the token, asks
//! for a new one and tries once more.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::GitHubApp;
use crate::{GitHubError, Result};

/// A comment in an issue's (or a pull request's) conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comment {
    pub id: u64,
    pub login: String,
    pub body: String,
}

/// A line comment of a pull request review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewComment {
    pub id: u64,
    pub login: String,
    pub body: String,
    /// The file, as the diff names it.
    pub path: String,
    /// The line in the file the comment is on, when it is still in the diff.
    pub line: Option<u64>,
    /// The comment this one answers, in a thread.
    pub in_reply_to: Option<u64>,
    pub review_id: Option<u64>,
}

#[derive(Deserialize)]
struct UserJson {
    login: String,
}

#[derive(Deserialize)]
struct CommentJson {
    id: u64,
    user: UserJson,
    #[serde(default)]
    body: Option<String>,
}

#[derive(Deserialize)]
struct ReviewCommentJson {
    id: u64,
    user: UserJson,
    #[serde(default)]
    body: Option<String>,
    path: String,
    #[serde(default)]
    line: Option<u64>,
    #[serde(default)]
    original_line: Option<u64>,
    #[serde(default)]
    in_reply_to_id: Option<u64>,
    #[serde(default)]
    pull_request_review_id: Option<u64>,
}

/// One repository, reached as one installation of the App.
pub struct Repository<'a> {
    app: &'a GitHubApp,
    installation: u64,
    full_name: String,
}

/// The most comments read from one thread (GitHub's largest page, times four).
const MOST_PAGES: u32 = 4;

impl<'a> Repository<'a> {
    pub(crate) fn new(app: &'a GitHubApp, installation: u64, full_name: &str) -> Self {
        Self {
            app,
            installation,
            full_name: full_name.to_string(),
        }
    }

    pub fn full_name(&self) -> &str {
        &self.full_name
    }

    /// The token this repository's calls use (for git on the host).
    pub async fn token(&self) -> Result<String> {
        self.app
            .installation_token(self.installation, &self.full_name)
            .await
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let path = format!("/repos/{}{path}", self.full_name);
        let token = self.token().await?;
        let rest = self.app.rest();
        match rest
            .call(&format!("Bearer {token}"), method.clone(), &path, body)
            .await
        {
            Err(GitHubError {
                status: Some(401), ..
            }) => {
                self.app.forget_token(self.installation, &self.full_name);
                let token = self.token().await?;
                let bearer = format!("Bearer {token}");
                Ok(rest.call(&bearer, method, &path, body).await?.1)
            }
            other => Ok(other?.1),
        }
    }

    async fn pages<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Vec<T>> {
        let mut all = Vec::new();
        for page in 1..=MOST_PAGES {
            let answer = self
                .call(
                    Method::GET,
                    &format!("{path}?per_page=100&page={page}"),
                    None,
                )
                .await?;
            let items: Vec<T> = serde_json::from_value(answer)
                .map_err(|err| GitHubError::new(None, format!("unexpected answer: {err}")))?;
            let full = items.len() == 100;
            all.extend(items);
            if !full {
                break;
            }
        }
        Ok(all)
    }

    /// The user's permission on the repository: `admin`, `write`, `read` or `none`.
    pub async fn permission(&self, login: &str) -> Result<String> {
        match self
            .call(
                Method::GET,
                &format!("/collaborators/{login}/permission"),
                None,
            )
            .await
        {
            Ok(answer) => Ok(answer["permission"].as_str().unwrap_or("none").to_string()),
            Err(GitHubError {
                status: Some(404), ..
            }) => Ok("none".into()),
            Err(err) => Err(err),
        }
    }

    /// Whether the user may push to the repository (`write` or `admin`; `maintain` reads as
    /// `write` here).
    pub async fn can_write(&self, login: &str) -> Result<bool> {
        Ok(matches!(
            self.permission(login).await?.as_str(),
            "admin" | "write"
        ))
    }

    /// Reacts to an issue (or pull request) with `content` (`eyes`, `+1`, `rocket`, …).
    pub async fn react_to_issue(&self, number: u64, content: &str) -> Result<()> {
        let body = json!({ "content": content });
        self.call(
            Method::POST,
            &format!("/issues/{number}/reactions"),
            Some(&body),
        )
        .await
        .map(drop)
    }

    /// Reacts to a comment of an issue's conversation.
    pub async fn react_to_comment(&self, comment_id: u64, content: &str) -> Result<()> {
        let body = json!({ "content": content });
        let path = format!("/issues/comments/{comment_id}/reactions");
        self.call(Method::POST, &path, Some(&body)).await.map(drop)
    }

    /// Adds a comment to an issue's (or pull request's) conversation; its id.
    pub async fn comment(&self, number: u64, body: &str) -> Result<u64> {
        let body = json!({ "body": body });
        let answer = self
            .call(
                Method::POST,
                &format!("/issues/{number}/comments"),
                Some(&body),
            )
            .await?;
        answer["id"]
            .as_u64()
            .ok_or_else(|| GitHubError::new(None, "GitHub did not say which comment it made"))
    }

    /// Replaces the text of one of the App's comments.
    pub async fn edit_comment(&self, comment_id: u64, body: &str) -> Result<()> {
        let body = json!({ "body": body });
        let path = format!("/issues/comments/{comment_id}");
        self.call(Method::PATCH, &path, Some(&body)).await.map(drop)
    }

    /// The conversation of an issue or pull request, oldest first.
    pub async fn issue_comments(&self, number: u64) -> Result<Vec<Comment>> {
        let found: Vec<CommentJson> = self.pages(&format!("/issues/{number}/comments")).await?;
        Ok(found.into_iter().map(Comment::from).collect())
    }

    /// Every line comment of a pull request, oldest first (the threads of all its reviews).
    pub async fn review_comments(&self, pull: u64) -> Result<Vec<ReviewComment>> {
        let found: Vec<ReviewCommentJson> = self.pages(&format!("/pulls/{pull}/comments")).await?;
        Ok(found.into_iter().map(ReviewComment::from).collect())
    }

    /// Whether `login` is a member of `org` (asked with this repository's token).
    pub async fn is_org_member(&self, org: &str, login: &str) -> Result<bool> {
        let token = self.token().await?;
        let path = format!("/orgs/{org}/members/{login}");
        match self
            .app
            .rest()
            .call(&format!("Bearer {token}"), Method::GET, &path, None)
            .await
        {
            Ok(_) => Ok(true),
            Err(GitHubError {
                status: Some(302 | 404),
                ..
            }) => Ok(false),
            Err(err) => Err(err),
        }
    }
}

impl From<CommentJson> for Comment {
    fn from(found: CommentJson) -> Self {
        Comment {
            id: found.id,
            login: found.user.login,
            body: found.body.unwrap_or_default(),
        }
    }
}

impl From<ReviewCommentJson> for ReviewComment {
    fn from(found: ReviewCommentJson) -> Self {
        ReviewComment {
            id: found.id,
            login: found.user.login,
            body: found.body.unwrap_or_default(),
            path: found.path,
            line: found.line.or(found.original_line),
            in_reply_to: found.in_reply_to_id,
            review_id: found.pull_request_review_id,
        }
    }
}
