//! The result a person can use: the change committed on `berth/<short id>`, pushed from the
//! runner's host with host-side credentials, and a pull request opened through GitHub's REST
//! API (with `berth-github`, the one client of GitHub). A follow-up adds a commit to the same
//! branch and keeps the same pull request.

use berth_github::pulls::{self, NewPullRequest};
use berth_guard::repository_on;
use berth_proto::Task;

use crate::git::{text_of, Checkout};
use crate::Published;

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

/// What the pull request says besides the work: its summary, and the issue it fixes (for a
/// task started from a GitHub issue).
#[derive(Clone, Debug, Default)]
pub struct Description {
    pub summary: String,
    pub fixes_issue: Option<i64>,
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
    description: &Description,
) -> Result<Published, String> {
    let branch = branch_name(task);
    let title = title_for(checkout, task, github, description).await;
    let parent = remote_branch(checkout, &branch)
        .await?
        .unwrap_or(base.to_string());
    let tree = tree_with(checkout, base, diff).await?;
    let parent_tree = checkout
        .git_text(&["rev-parse", &format!("{parent}^{{tree}}")])
        .await?;
    if tree != parent_tree {
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
                let mut body = description.summary.clone();
                if let Some(issue) = description.fixes_issue {
                    body.push_str(&format!("\n\nFixes #{issue}"));
                }
                body.push_str(&format!("\n\n---\nMade by Berth for task `{}`.", task.id));
                let new = NewPullRequest {
                    repository: &repository,
                    head: &branch,
                    base: &base_branch,
                    title: &title,
                    body: &body,
                };
                let rest = berth_github::Rest::new(&github.api_url);
                let opened = pulls::open(&rest, token, &new).await;
                Some(opened.map_err(|err| format!("opening the pull request failed: {err}"))?)
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

/// The commit's subject and the pull request's title: for a task from an issue, the issue's
/// own title (asked of GitHub, or just its number if that fails), not the request Berth wrote
/// for the model; else the prompt's first line.
async fn title_for(
    checkout: &Checkout,
    task: &Task,
    github: Option<&GitHub>,
    description: &Description,
) -> String {
    let Some(issue) = description.fixes_issue else {
        return title_of(&task.prompt);
    };
    let asked = match (github, checkout.token()) {
        (Some(github), Some(token)) => match repository_on(&github.web_url, &task.repo_url) {
            Some(repository) => {
                let rest = berth_github::Rest::new(&github.api_url);
                pulls::issue_title(&rest, token, &repository, issue).await
            }
            None => return format!("Fix #{issue}"),
        },
        _ => return format!("Fix #{issue}"),
    };
    match asked {
        Ok(name) => title_of(&format!("Fix #{issue}: {name}")),
        Err(err) => {
            tracing::warn!(task = %task.id, error = %err, "the issue's title is unknown");
            format!("Fix #{issue}")
        }
    }
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
    fn titles_are_one_short_line() {
        assert_eq!(title_of("\n  Fix the parser\nmore words"), "Fix the parser");
        assert_eq!(title_of(&"x".repeat(100)).chars().count(), 72);
    }
}
