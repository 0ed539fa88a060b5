//! A task's pull request, read with its checks and merged through Berth with the owner's own
//! GitHub token, against the fake GitHub API: what is listed, what merges, and what is
//! refused and why.

use berth_client::Client;
use berth_github::pulls::{self, NewPullRequest};
use berth_github::Rest;
use berth_proto::{
    Check, CheckState, CreateTask, MergeMethod, MergePullRequest, PullRequestState, Secret, TaskId,
    TaskStatus,
};
use berth_store::TaskEnd;
use berth_testkit::github_api::merging::Merge;
use berth_testkit::FakeGitHubApi;

use crate::accounts::test_key;
use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};

on_both_backends!(
    the_checks_are_listed_and_it_merges_once_they_pass,
    a_push_after_the_person_looked_or_a_conflict_is_not_merged,
    others_see_nothing_and_a_missing_token_or_pull_request_is_named,
);

/// Alice's GitHub token, which the fake takes.
pub const GITHUB_TOKEN: &str = "gho_alices_own_token";
pub const REPO: &str = "acme/widgets";
pub const BRANCH: &str = "berth/tidy-parser";

pub struct Scene {
    pub github: FakeGitHubApi,
    pub server: TestServer,
    pub alice: Client,
    /// Alice's finished task, whose run opened pull request `number`.
    pub task: TaskId,
    pub number: u64,
    pub db: TestDatabase,
}

/// A server whose GitHub is the fake, Alice with her GitHub token stored sealed (as her
/// GitHub sign-in leaves it), and her finished task with the pull request its run opened.
pub async fn scene(backend: &Backend) -> Scene {
    let github = FakeGitHubApi::start(GITHUB_TOKEN).await;
    let mut db = TestDatabase::new(backend).await;
    db.shared.github_web_url = github.url().into();
    db.shared.github_api_url = github.url().into();
    let keys = berth_store::sealing::Settings {
        encryption_key: Some(Secret::new(test_key(1))),
        ..Default::default()
    };
    db.shared.keyring = keys.keyring().unwrap();
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let alice_id = alice.me().await.unwrap().user_id;
    let sealed = db
        .shared
        .keyring
        .as_ref()
        .unwrap()
        .seal(alice_id, GITHUB_TOKEN);
    server.store.put_github_token(&sealed).await.unwrap();
    let new = NewPullRequest {
        repository: REPO,
        head: BRANCH,
        base: "main",
        title: "Tidy the parser",
        body: "Made by Berth",
    };
    let url = pulls::open(&Rest::new(github.url()), GITHUB_TOKEN, &new)
        .await
        .unwrap();
    let task = finished_task(&server, &alice, Some(url)).await;
    let number = github.pulls()[0].number;
    Scene {
        github,
        server,
        alice,
        task,
        number,
        db,
    }
}

/// A task of `owner`'s that ended with `pull_request_url`.
async fn finished_task(server: &TestServer, owner: &Client, url: Option<String>) -> TaskId {
    let request = CreateTask::new("https://github.com/acme/widgets", "Tidy the parser");
    let (task, _) = owner.create_task(&request, None).await.unwrap();
    let fence = server.claim().await;
    assert_eq!(fence.task_id, task.id);
    let end = TaskEnd {
        status: TaskStatus::Succeeded,
        reason: None,
        diff: None,
        branch: Some(BRANCH.into()),
        pull_request_url: url,
    };
    server.store.finish_task(fence, end).await.unwrap();
    task.id
}

fn merge_at(sha: &str) -> MergePullRequest {
    MergePullRequest {
        sha: sha.into(),
        method: MergeMethod::Merge,
        ignore_checks: false,
    }
}

/// The status and code of a refusal, and its message.
fn refusal<T: std::fmt::Debug>(
    answer: Result<T, berth_client::ClientError>,
) -> (u16, String, String) {
    match answer.expect_err("refused") {
        berth_client::ClientError::Api {
            status,
            code,
            message,
        } => (status.as_u16(), code, message),
        other => panic!("not an API error: {other}"),
    }
}

async fn the_checks_are_listed_and_it_merges_once_they_pass(backend: Backend) {
    let Scene {
        github,
        server,
        alice,
        task,
        number,
        db: _db,
    } = scene(&backend).await;
    let sha = github.pulls()[0].head_sha.clone();
    github.set_status(
        REPO,
        &sha,
        "ci/build",
        "success",
        "https://ci.example.com/1",
    );
    github.set_check_run(REPO, &sha, "test", "completed", Some("success"));
    github.set_check_run(REPO, &sha, "lint", "in_progress", None);

    let seen = alice.pull_request(task).await.unwrap();
    assert_eq!((seen.repository.as_str(), seen.number), (REPO, number));
    assert_eq!(seen.state, PullRequestState::Open);
    assert_eq!(
        (seen.head_branch.as_str(), seen.base_branch.as_str()),
        (BRANCH, "main")
    );
    assert_eq!(
        (seen.head_sha.as_str(), seen.mergeable),
        (sha.as_str(), Some(true))
    );
    let states: Vec<(&str, CheckState)> = seen
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.state))
        .collect();
    assert_eq!(
        states,
        [
            ("ci/build", CheckState::Success),
            ("test", CheckState::Success),
            ("lint", CheckState::Pending)
        ]
    );
    assert_eq!(
        seen.checks[0].url.as_deref(),
        Some("https://ci.example.com/1")
    );
    assert_eq!(seen.checks_state, CheckState::Pending);

    // An unfinished check holds the merge back until the person says otherwise.
    let (status, code, message) = refusal(alice.merge_pull_request(task, &merge_at(&sha)).await);
    assert_eq!((status, code.as_str()), (409, "checks_not_passed"));
    assert!(message.contains("not finished: lint"), "{message}");
    assert!(github.merges().is_empty());

    github.set_check_run(REPO, &sha, "lint", "completed", Some("success"));
    let squash = MergePullRequest {
        method: MergeMethod::Squash,
        ..merge_at(&sha)
    };
    let merged = alice.merge_pull_request(task, &squash).await.unwrap();
    assert_eq!(merged.state, PullRequestState::Merged);
    let expected = Merge {
        repo: REPO.into(),
        number,
        sha,
        method: "squash".into(),
    };
    assert_eq!(github.merges(), [expected]);
    let again = alice.pull_request(task).await.unwrap();
    assert_eq!(again.state, PullRequestState::Merged);
    // A second device's tap, or a retry: said as what it is, not as a conflict.
    let (status, code, _) = refusal(alice.merge_pull_request(task, &squash).await);
    assert_eq!((status, code.as_str()), (409, "already_merged"));
    assert_eq!(github.merges().len(), 1);
    server.stop().await;
}

async fn a_push_after_the_person_looked_or_a_conflict_is_not_merged(backend: Backend) {
    let Scene {
        github,
        server,
        alice,
        task,
        number,
        db: _db,
    } = scene(&backend).await;
    let seen = alice.pull_request(task).await.unwrap();
    assert_eq!(seen.checks, Vec::<Check>::new());
    assert_eq!(
        seen.checks_state,
        CheckState::Success,
        "no checks hold nothing back"
    );

    let pushed = github.push_to_pull(REPO, number);
    let (status, code, message) = refusal(
        alice
            .merge_pull_request(task, &merge_at(&seen.head_sha))
            .await,
    );
    assert_eq!((status, code.as_str()), (409, "head_moved"));
    assert!(
        message.contains("new commits since you looked"),
        "{message}"
    );
    assert!(github.merges().is_empty());

    github.set_mergeable(REPO, number, Some(false));
    let (status, code, message) = refusal(alice.merge_pull_request(task, &merge_at(&pushed)).await);
    assert_eq!((status, code.as_str()), (409, "not_mergeable"));
    assert!(
        message.contains("Pull Request is not mergeable"),
        "GitHub's reason: {message}"
    );

    // A failed check is merged past only when asked to.
    github.set_mergeable(REPO, number, Some(true));
    github.set_status(
        REPO,
        &pushed,
        "ci/build",
        "failure",
        "https://ci.example.com/2",
    );
    let (status, code, message) = refusal(alice.merge_pull_request(task, &merge_at(&pushed)).await);
    assert_eq!((status, code.as_str()), (409, "checks_not_passed"));
    assert!(message.contains("failed: ci/build"), "{message}");
    let anyway = MergePullRequest {
        ignore_checks: true,
        ..merge_at(&pushed)
    };
    let merged = alice.merge_pull_request(task, &anyway).await.unwrap();
    assert_eq!(
        (merged.state, merged.checks_state),
        (PullRequestState::Merged, CheckState::Failure)
    );
    assert_eq!(github.merges().len(), 1);
    server.stop().await;
}

async fn others_see_nothing_and_a_missing_token_or_pull_request_is_named(backend: Backend) {
    let Scene {
        github,
        server,
        alice,
        task,
        db: _db,
        ..
    } = scene(&backend).await;
    let sha = github.pulls()[0].head_sha.clone();
    let bob = server.user("bob").await;
    assert_eq!(refusal(bob.pull_request(task).await).1, "not_found");
    assert_eq!(
        refusal(bob.merge_pull_request(task, &merge_at(&sha)).await).1,
        "not_found"
    );

    // Bob's own task with a pull request, but Bob never signed in with GitHub.
    let url = github.pulls()[0].html_url.clone();
    let bobs = finished_task(&server, &bob, Some(url)).await;
    let (status, code, message) = refusal(bob.pull_request(bobs).await);
    assert_eq!((status, code.as_str()), (409, "no_github_token"));
    assert!(message.contains("sign in with GitHub"), "{message}");

    let without = finished_task(&server, &alice, None).await;
    let (status, code, _) = refusal(alice.pull_request(without).await);
    assert_eq!((status, code.as_str()), (404, "no_pull_request"));

    let (status, code, _) = refusal(alice.merge_pull_request(task, &merge_at("HEAD")).await);
    assert_eq!((status, code.as_str()), (422, "invalid_sha"));
    assert!(github.merges().is_empty());
    server.stop().await;
}
