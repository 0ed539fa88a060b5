//! Pull requests, opened with whichever token pushed the branch: an installation's, a user's
//! or the server's own. Opening is idempotent: when GitHub says one is already open for the
//! branch, that one is found and returned. A pull request that fixes an issue is titled after
//! it. Read back with its checks, and merged, with the task owner's own token.

use berth_proto::{MergeMethod, PullRequestState, PullRequestView};
use reqwest::Method;
use serde_json::{json, Value};

use crate::rest::Rest;
use crate::{checks, GitHubError, Result};

/// What to open.
#[derive(Clone, Debug)]
pub struct NewPullRequest<'a> {
    /// `owner/name`.
    pub repository: &'a str,
    /// The branch with the work.
    pub head: &'a str,
    /// The branch it goes into.
    pub base: &'a str,
    pub title: &'a str,
    pub body: &'a str,
}

/// Opens the pull request, or finds the one already open for the branch; its web address.
pub async fn open(rest: &Rest, token: &str, new: &NewPullRequest<'_>) -> Result<String> {
    let bearer = format!("Bearer {token}");
    let path = format!("/repos/{}/pulls", new.repository);
    let request = json!({"title": new.title, "head": new.head, "base": new.base, "body": new.body});
    match rest
        .call(&bearer, Method::POST, &path, Some(&request))
        .await
    {
        Ok((_, answer)) => html_url(&answer),
        Err(GitHubError {
            status: Some(422), ..
        }) => {
            let owner = new.repository.split('/').next().unwrap_or_default();
            let query = format!("{path}?head={owner}:{}&state=open", new.head);
            let (_, listed) = rest.call(&bearer, Method::GET, &query, None).await?;
            html_url(&listed[0]).map_err(|_| {
                GitHubError::new(
                    Some(422),
                    format!("GitHub refused the pull request from {}", new.head),
                )
            })
        }
        Err(err) => Err(err),
    }
}

/// The title of issue `number`, which a pull request fixes.
pub async fn issue_title(
    rest: &Rest,
    token: &str,
    repository: &str,
    number: i64,
) -> Result<String> {
    let bearer = format!("Bearer {token}");
    let path = format!("/repos/{repository}/issues/{number}");
    let (_, issue) = rest.call(&bearer, Method::GET, &path, None).await?;
    issue["title"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| GitHubError::new(None, "GitHub did not say the issue's title"))
}

/// Pull request `number` of `repository` as it stands, with the checks of its head commit.
pub async fn view(
    rest: &Rest,
    token: &str,
    repository: &str,
    number: u64,
) -> Result<PullRequestView> {
    let bearer = format!("Bearer {token}");
    let path = format!("/repos/{repository}/pulls/{number}");
    let (_, pull) = rest.call(&bearer, Method::GET, &path, None).await?;
    let head_sha = pull["head"]["sha"]
        .as_str()
        .ok_or_else(|| GitHubError::new(None, "GitHub did not say the pull request's head"))?
        .to_string();
    let state = match (pull["merged"].as_bool(), pull["state"].as_str()) {
        (Some(true), _) => PullRequestState::Merged,
        (_, Some("open")) => PullRequestState::Open,
        _ => PullRequestState::Closed,
    };
    let checks = checks::of_commit(rest, token, repository, &head_sha).await?;
    let text = |value: &Value| value.as_str().unwrap_or_default().to_string();
    Ok(PullRequestView {
        url: html_url(&pull)?,
        repository: repository.to_string(),
        number,
        title: text(&pull["title"]),
        state,
        head_branch: text(&pull["head"]["ref"]),
        base_branch: text(&pull["base"]["ref"]),
        head_sha,
        mergeable: pull["mergeable"].as_bool(),
        checks_state: checks::overall(&checks),
        checks,
    })
}

/// Merges pull request `number` if its head is still `sha`; the merge commit's sha. GitHub
/// answers 409 when the head has moved and 405 when it will not merge (conflicts, branch
/// rules, already merged); both come back as the [`GitHubError`] with GitHub's message.
pub async fn merge(
    rest: &Rest,
    token: &str,
    repository: &str,
    number: u64,
    sha: &str,
    method: MergeMethod,
) -> Result<String> {
    let bearer = format!("Bearer {token}");
    let path = format!("/repos/{repository}/pulls/{number}/merge");
    let request = json!({"sha": sha, "merge_method": method.as_str()});
    let (_, answer) = rest
        .call(&bearer, Method::PUT, &path, Some(&request))
        .await?;
    Ok(answer["sha"].as_str().unwrap_or_default().to_string())
}

fn html_url(answer: &Value) -> Result<String> {
    answer["html_url"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| GitHubError::new(None, "GitHub did not say where the pull request is"))
}
