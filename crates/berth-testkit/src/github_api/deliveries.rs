//! Webhook deliveries as GitHub sends them: the payload's shape (`action`, `installation`,
//! `repository`, `sender`, and the issue, comment, label, review and pull request), the
//! `X-GitHub-Event`, `X-GitHub-Delivery` and `X-Hub-Signature-256` headers, signed with the
//! App's webhook secret over the body as sent.

use hmac::Mac;
use serde_json::{json, Value};

use super::issues::{comment_json, ReviewComment};
use super::{lock, FakeGitHubApi, Inner};

/// One delivery, ready to send (and to send again, as GitHub's "Redeliver" does).
#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: String,
    pub event: String,
    pub body: Vec<u8>,
    /// `X-Hub-Signature-256`; `None` sends none.
    pub signature: Option<String>,
}

impl Delivery {
    /// The payload, as sent.
    pub fn payload(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON payload")
    }

    /// The same event under a new delivery id (not what GitHub does: what a replay would).
    pub fn with_new_id(&self) -> Delivery {
        Delivery {
            id: uuid::Uuid::now_v7().to_string(),
            ..self.clone()
        }
    }

    /// Posts it to `url`; the status and body of the answer.
    pub async fn send(&self, url: &str) -> (u16, String) {
        let client = reqwest::Client::new();
        let mut request = client
            .post(url)
            .header("user-agent", "GitHub-Hookshot/fake")
            .header("content-type", "application/json")
            .header("x-github-event", &self.event)
            .header("x-github-delivery", &self.id)
            .header("x-github-hook-installation-target-type", "integration")
            .body(self.body.clone());
        if let Some(signature) = &self.signature {
            request = request.header("x-hub-signature-256", signature);
        }
        let answer = request.send().await.expect("the server answers");
        let status = answer.status().as_u16();
        (status, answer.text().await.unwrap_or_default())
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`, as GitHub signs.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Inner {
    fn envelope(&mut self, repo: &str, sender: &str, action: &str) -> Value {
        let sender = self.world.account(sender).json();
        let app = self.app.as_ref().expect("install_app first");
        let (owner, name) = repo.split_once('/').expect("owner/name");
        json!({
            "action": action,
            "installation": {"id": app.installation, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="},
            "repository": {
                "id": 4242, "name": name, "full_name": repo, "private": true,
                "owner": {"login": owner, "id": 77, "type": "Organization"},
                "html_url": format!("https://github.com/{repo}"),
                "clone_url": format!("https://github.com/{repo}.git"),
                "default_branch": "main",
            },
            "sender": sender,
        })
    }

    pub(crate) fn issue_json(&self, repo: &str, number: u64) -> Value {
        if let Some(pull) = self
            .pulls
            .iter()
            .find(|p| p.repo == repo && p.number == number)
        {
            return json!({
                "number": number, "title": pull.title, "body": pull.body, "state": "open",
                "user": {"login": "berth[bot]", "id": 1, "type": "Bot"},
                "pull_request": {"html_url": pull.html_url,
                    "url": format!("{}/repos/{repo}/pulls/{number}", self.url)},
                "created_at": now(), "updated_at": now(),
            });
        }
        let issue = self
            .world
            .issues
            .iter()
            .find(|i| i.repo == repo && i.number == number)
            .expect("open_issue first");
        json!({
            "id": 9000 + number, "number": number, "title": issue.title, "body": issue.body,
            "state": "open", "user": issue.author.json(), "labels": [],
            "html_url": format!("https://github.com/{repo}/issues/{number}"),
            "created_at": now(), "updated_at": now(),
        })
    }

    fn signed(&self, event: &str, payload: Value) -> Delivery {
        let body = serde_json::to_vec(&payload).expect("JSON");
        let secret = &self.app.as_ref().expect("install_app first").webhook_secret;
        Delivery {
            id: uuid::Uuid::now_v7().to_string(),
            event: event.into(),
            signature: Some(github_signature(secret, &body)),
            body,
        }
    }
}

impl FakeGitHubApi {
    /// `issues` `labeled`: `sender` put `label` on the issue.
    pub fn labelled(&self, repo: &str, number: u64, label: &str, sender: &str) -> Delivery {
        let mut inner = lock(&self.inner);
        let mut payload = inner.envelope(repo, sender, "labeled");
        payload["issue"] = inner.issue_json(repo, number);
        payload["label"] = json!({"id": 1, "name": label, "color": "0e8a16"});
        inner.signed("issues", payload)
    }

    /// `issue_comment` `created` for a comment made with [`FakeGitHubApi::add_comment`].
    pub fn commented(&self, repo: &str, comment_id: u64) -> Delivery {
        let mut inner = lock(&self.inner);
        let comment = inner
            .world
            .comments
            .iter()
            .find(|c| c.id == comment_id)
            .expect("add_comment first")
            .clone();
        let app_id = inner.app.as_ref().map_or(0, |app| app.app_id);
        let mut payload = inner.envelope(repo, &comment.author.login, "created");
        payload["issue"] = inner.issue_json(repo, comment.number);
        payload["comment"] = comment_json(&inner.url, &comment, app_id);
        inner.signed("issue_comment", payload)
    }

    /// `pull_request_review` `submitted`: `reviewer` reviews pull request `number` with `body`
    /// and line comments `(path, line, text)`, each starting a thread.
    pub fn reviewed(
        &self,
        repo: &str,
        number: u64,
        reviewer: &str,
        body: &str,
        lines: &[(&str, u64, &str)],
    ) -> Delivery {
        let mut inner = lock(&self.inner);
        let author = inner.world.account(reviewer);
        let review = inner.world.fresh_id();
        for (path, line, text) in lines {
            let id = inner.world.fresh_id();
            inner.world.review_comments.push(ReviewComment {
                id,
                repo: repo.into(),
                pull: number,
                review,
                author: author.clone(),
                path: path.to_string(),
                line: *line,
                body: text.to_string(),
                in_reply_to: None,
            });
        }
        let pull = inner
            .pulls
            .iter()
            .find(|p| p.repo == repo && p.number == number)
            .expect("the pull request")
            .clone();
        let mut payload = inner.envelope(repo, reviewer, "submitted");
        payload["review"] = json!({
            "id": review, "body": body, "state": "commented", "user": author.json(),
            "submitted_at": now(), "html_url": format!("{}#pullrequestreview-{review}", pull.html_url),
        });
        payload["pull_request"] = json!({
            "number": number, "title": pull.title, "html_url": pull.html_url, "state": "open",
            "head": {"ref": pull.head, "repo": {"full_name": repo}},
            "base": {"ref": pull.base, "repo": {"full_name": repo}},
        });
        inner.signed("pull_request_review", payload)
    }

    /// Someone answers line comment `to` of a review in its thread, in a review of their own.
    pub fn reply_in_thread(&self, to: u64, author: &str, text: &str) -> u64 {
        let mut inner = lock(&self.inner);
        let author = inner.world.account(author);
        let first = inner
            .world
            .review_comments
            .iter()
            .find(|c| c.id == to)
            .expect("the comment")
            .clone();
        let id = inner.world.fresh_id();
        let review = inner.world.fresh_id();
        inner.world.review_comments.push(ReviewComment {
            id,
            review,
            author,
            body: text.into(),
            in_reply_to: Some(to),
            ..first
        });
        id
    }

    /// The line comments of pull request `number`, oldest first.
    pub fn review_comments(&self, repo: &str, number: u64) -> Vec<ReviewComment> {
        lock(&self.inner)
            .world
            .review_comments
            .iter()
            .filter(|c| c.repo == repo && c.pull == number)
            .cloned()
            .collect()
    }
}
