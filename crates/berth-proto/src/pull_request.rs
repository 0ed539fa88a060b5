//! A task's pull request as the API shows it (`GET /v1/tasks/{id}/pull_request`): where it
//! stands on GitHub, its checks summed up, and the body that asks to merge it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a pull request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PullRequestState {
    Open,
    Merged,
    /// Closed without merging.
    Closed,
}

/// One check's outcome, from a commit status or a check run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    /// Passed, or finished neutral or skipped: nothing stands in the way.
    Success,
    /// Failed, errored, was cancelled, timed out or wants action.
    Failure,
    /// Queued or still running.
    Pending,
}

/// One check of the pull request's head commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Check {
    /// The status's context or the check run's name, such as `ci/test`.
    pub name: String,
    pub state: CheckState,
    /// Where its details are on the CI's side, when it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A task's pull request, read from GitHub with the task owner's GitHub token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PullRequestView {
    /// The pull request's web address.
    pub url: String,
    /// `owner/name`.
    pub repository: String,
    pub number: u64,
    pub title: String,
    pub state: PullRequestState,
    /// The branch with the work.
    pub head_branch: String,
    /// The branch it goes into.
    pub base_branch: String,
    /// The head commit the checks are of; send it back to merge exactly what was seen.
    pub head_sha: String,
    /// Whether GitHub can merge it without conflicts; `null` while GitHub is still working
    /// it out (ask again in a moment) or once it is closed.
    pub mergeable: Option<bool>,
    /// The head commit's commit statuses and check runs, by name.
    pub checks: Vec<Check>,
    /// All checks together: `failure` if any failed, else `pending` if any is unfinished,
    /// else `success` (also when there are none).
    pub checks_state: CheckState,
}

/// How GitHub combines the branch into the base.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MergeMethod {
    /// A merge commit (GitHub's default).
    #[default]
    Merge,
    /// All commits squashed into one.
    Squash,
    /// The commits replayed onto the base.
    Rebase,
}

impl MergeMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            MergeMethod::Merge => "merge",
            MergeMethod::Squash => "squash",
            MergeMethod::Rebase => "rebase",
        }
    }
}

/// The body of `POST /v1/tasks/{id}/pull_request/merge`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergePullRequest {
    /// The `head_sha` the person reviewed: if the branch has moved since, nothing is merged.
    pub sha: String,
    #[serde(default)]
    pub method: MergeMethod,
    /// Merge even though some checks failed or have not finished. Without it such a merge
    /// is refused with `checks_not_passed`.
    #[serde(default)]
    pub ignore_checks: bool,
}
