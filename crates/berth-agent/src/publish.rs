//! The result a person can use: the change committed on `berth/<short id>`, pushed from the
//! runner's host with host-side credentials, and a pull request opened through GitHub's REST
//! API. A follow-up adds a commit to the same branch and keeps the same pull request.

use std::time::Duration;

use berth_proto::Task;
use berth_runner::git::{text_of, Checkout};
use berth_runner::Published;
use serde_json::{json, Value};

use crate::model::{retry_after, RetryPolicy};

/// Where pull requests are opened: the GitHub (or GitHub Enterprise) host whose repositories
/// get them, and its REST API.
#[derive(Clone, Debug)]
pub struct GitHub {
    /// Origin of the web host, such as `https://github.com`.
    pub web_url: String,
    /// Such as `https://api.github.com`, or `https://ghe.example.com/api/v3`.
    pub api_url: String,
}

/// Who commits.
#[derive(Clone, Debug)]
pub struct Author {
    pub name: String,
    pub email: String,
}

impl Default for Author {
    fn default() -> Self {
        Self {
            name: "Berth".into(),
            email: "berth@localhost".into(),
        }
    }
}

/// The branch a task's work goes to: the random end of its id, so it does not collide.
pub fn branch_name(task: &Task) -> String {
    let id = task.id.0.simple().to_string();
    format!("berth/{}", &id[id.len() - 12..])
}

/// Commits `diff` (against `base`) on the task's branch and pushes it; then opens a pull
/// request if the repository is on the configured GitHub and none is open yet.
pub async fn publish(
    checkout: &Checkout,
    task: &Task,
    base: &str,
    diff: &[u8],
    author: &Author,
    github: Option<&GitHub>,
    summary: &str,
) -> Result<Published, String> {
    let branch = branch_name(task);
    let parent = remote_branch(checkout, &branch)
        .await?
        .unwrap_or(base.to_string());
    let tree = tree_with(checkout, base, diff).await?;
    let parent_tree = checkout
        .git_text(&["rev-parse", &format!("{parent}^{{tree}}")])
        .await?;
    if tree != parent_tree {
        let title = title_of(&task.prompt);
        let message = format!("{title}\n\nMade by Berth for task {}.\n", task.id);
        let who = [
            ("GIT_AUTHOR_NAME", author.name.as_str()),
            ("GIT_AUTHOR_EMAIL", author.email.as_str()),
            ("GIT_COMMITTER_NAME", author.name.as_str()),
            ("GIT_COMMITTER_EMAIL", author.email.as_str()),
        ];
        let commit = checkout
            .git_text_with(&who, &["commit-tree", &tree, "-p", &parent, "-m", &message])
            .await?;
        let refspec = format!("{commit}:refs/heads/{branch}");
        let output = checkout
            .git_remote(&["push", "--quiet", "origin", &refspec])
            .await
            .map_err(|_| "cannot run git".to_string())?;
        text_of(output, &["push"]).map_err(|err| format!("pushing {branch} failed: {err}"))?;
    }
    let pull_request_url = match (github, &task.result.pull_request_url) {
        (_, Some(existing)) => Some(existing.clone()),
        (Some(github), None) => match (
            repository_on(&github.web_url, &task.repo_url),
            checkout.token(),
        ) {
            (Some(repository), Some(token)) => {
                let base_branch = base_branch(checkout, task).await?;
                let body = format!("{summary}\n\n---\nMade by Berth for task `{}`.", task.id);
                Some(
                    open_pull_request(
                        github,
                        &repository,
                        token,
                        &branch,
                        &base_branch,
                        &title_of(&task.prompt),
                        &body,
                    )
                    .await?,
                )
            }
            _ => None,
        },
        (None, None) => None,
    };
    Ok(Published {
        branch: Some(branch),
        pull_request_url,
    })
}

/// The tip of the task's branch on the remote, if it was pushed before.
async fn remote_branch(checkout: &Checkout, branch: &str) -> Result<Option<String>, String> {
    let refspec = format!("+refs/heads/{branch}:refs/berth/previous");
    let output = checkout
        .git_remote(&["fetch", "--quiet", "--no-tags", "origin", &refspec])
        .await
        .map_err(|_| "cannot run git".to_string())?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("couldn't find remote ref") {
            return Ok(None);
        }
        return Err(format!("fetching {branch} failed: {}", stderr.trim()));
    }
    checkout
        .git_text(&["rev-parse", "refs/berth/previous"])
        .await
        .map(Some)
}

/// The tree of `base` with `diff` applied, built in a scratch index: the working tree is
/// left alone.
async fn tree_with(checkout: &Checkout, base: &str, diff: &[u8]) -> Result<String, String> {
    let git_dir = checkout.path().join(".git");
    let patch = git_dir
        .join("berth-publish.patch")
        .to_string_lossy()
        .to_string();
    let index = git_dir
        .join("berth-publish-index")
        .to_string_lossy()
        .to_string();
    std::fs::write(&patch, diff).map_err(|err| err.to_string())?;
    let _ = std::fs::remove_file(&index);
    let scratch_index = [("GIT_INDEX_FILE", index.as_str())];
    checkout
        .git_text_with(&scratch_index, &["read-tree", base])
        .await?;
    if !diff.is_empty() {
        let apply = [
            "apply",
            "--cached",
            "--binary",
            "--whitespace=nowarn",
            &patch,
        ];
        checkout.git_text_with(&scratch_index, &apply).await?;
    }
    let tree = checkout
        .git_text_with(&scratch_index, &["write-tree"])
        .await;
    let _ = std::fs::remove_file(&index);
    tree
}

/// The branch a pull request goes into: the task's ref when it is a branch, else the
/// repository's default branch.
async fn base_branch(checkout: &Checkout, task: &Task) -> Result<String, String> {
    if let Some(git_ref) = &task.git_ref {
        let remote = format!("refs/remotes/origin/{git_ref}");
        if checkout
            .git_text(&["show-ref", "--verify", "--quiet", &remote])
            .await
            .is_ok()
        {
            return Ok(git_ref.clone());
        }
    }
    let head = checkout
        .git_text(&["symbolic-ref", "--short", "refs/remotes/origin/HEAD"])
        .await?;
    Ok(head.trim_start_matches("origin/").to_string())
}

/// `owner/name` of a repository on the GitHub host (`web_url`, such as
/// `https://github.com`), from an https URL.
pub fn repository_on(web_url: &str, repo_url: &str) -> Option<String> {
    let web = url::Url::parse(web_url).ok()?;
    let repo = url::Url::parse(repo_url).ok()?;
    if repo.origin() != web.origin() {
        return None;
    }
    let path = repo.path().trim_matches('/').trim_end_matches(".git");
    let mut parts = path.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(owner), Some(name), None) if !owner.is_empty() && !name.is_empty() => {
            Some(format!("{owner}/{name}"))
        }
        _ => None,
    }
}

/// Opens the pull request, or finds the one already open for the branch.
async fn open_pull_request(
    github: &GitHub,
    repository: &str,
    token: &str,
    branch: &str,
    base: &str,
    title: &str,
    body: &str,
) -> Result<String, String> {
    let http = reqwest::Client::builder()
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|err| err.to_string())?;
    let pulls = format!(
        "{}/repos/{repository}/pulls",
        github.api_url.trim_end_matches('/')
    );
    let request = json!({"title": title, "head": branch, "base": base, "body": body});
    let policy = RetryPolicy {
        attempts: 3,
        ..RetryPolicy::default()
    };
    let mut retry = 0;
    let (status, answer) = loop {
        let sent = http
            .post(&pulls)
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .json(&request)
            .send()
            .await;
        let failure = match sent {
            Ok(response) if !RetryPolicy::is_retryable(response.status().as_u16()) => {
                let status = response.status().as_u16();
                let answer: Value = response.json().await.unwrap_or(Value::Null);
                break (status, answer);
            }
            Ok(response) => (
                format!("HTTP {}", response.status()),
                retry_after(response.headers()),
            ),
            Err(err) => (err.without_url().to_string(), None),
        };
        retry += 1;
        if retry >= policy.attempts {
            return Err(format!("opening the pull request failed: {}", failure.0));
        }
        tokio::time::sleep(policy.delay(retry, failure.1)).await;
    };
    if status == 201 {
        return answer["html_url"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| "GitHub did not say where the pull request is".to_string());
    }
    let already = answer["errors"].as_array().is_some_and(|errors| {
        errors.iter().any(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("already exists"))
        })
    });
    if status == 422 && already {
        let owner = repository.split('/').next().unwrap_or_default();
        let listed: Value = http
            .get(&pulls)
            .query(&[
                ("head", format!("{owner}:{branch}")),
                ("state", "open".into()),
            ])
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .send()
            .await
            .map_err(|err| err.without_url().to_string())?
            .json()
            .await
            .map_err(|err| err.to_string())?;
        if let Some(url) = listed[0]["html_url"].as_str() {
            return Ok(url.to_string());
        }
    }
    let message = answer["message"].as_str().unwrap_or("no message");
    Err(format!(
        "GitHub refused the pull request ({status}): {message}"
    ))
}

/// The first line of the prompt, short enough for a commit subject.
fn title_of(prompt: &str) -> String {
    let line = prompt
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("Berth task");
    let mut title: String = line.chars().take(72).collect();
    if line.chars().count() > 72 {
        title.pop();
        title.push('…');
    }
    title
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_on_the_github_host_are_recognised() {
        let github = "https://github.com";
        assert_eq!(
            repository_on(github, "https://github.com/acme/widgets.git").as_deref(),
            Some("acme/widgets")
        );
        assert_eq!(
            repository_on(github, "https://github.com/acme/widgets").as_deref(),
            Some("acme/widgets")
        );
        assert_eq!(
            repository_on(github, "https://gitlab.com/acme/widgets"),
            None
        );
        assert_eq!(
            repository_on(github, "https://github.com/acme/widgets/extra"),
            None
        );
        assert_eq!(
            repository_on(github, "git@github.com:acme/widgets.git"),
            None
        );
    }

    #[test]
    fn titles_are_one_short_line() {
        assert_eq!(title_of("\n  Fix the parser\nmore words"), "Fix the parser");
        assert_eq!(title_of(&"x".repeat(100)).chars().count(), 72);
    }
}
