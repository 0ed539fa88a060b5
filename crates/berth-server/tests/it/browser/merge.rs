//! From the phone to a merged pull request: a finished task's view shows its pull request's
//! checks, a line each; Merge asks first in a dialog naming the pull request and its branch;
//! confirming merges it on (the fake) GitHub and the view says merged.

use berth_testkit::chromium::{Chromium, PHONE};
use serde_json::json;

use super::accessibility::axe;
use super::tasks::screenshot;
use super::{click, sign_in, text};
use crate::harness::Backend;
use crate::pull_requests::{scene, Scene, BRANCH, REPO};

/// The open dialog's findings from axe, when `BERTH_AXE_JS` names the engine.
async fn dialog_findings(chromium: &mut Chromium, tab: &str) -> Vec<String> {
    let Some(path) = std::env::var_os("BERTH_AXE_JS") else {
        eprintln!("the dialog is not checked with axe: BERTH_AXE_JS is not set");
        return Vec::new();
    };
    let source = std::fs::read_to_string(path).unwrap();
    let found = axe(chromium, tab, &source).await;
    let serious = |f: &&String| f.starts_with("serious") || f.starts_with("critical");
    found.iter().filter(serious).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_is_merged_from_the_task_view_after_a_confirmation() {
    let Some(mut chromium) = Chromium::launch().await else {
        return;
    };
    let Scene {
        github,
        server,
        alice,
        task,
        number,
        db: _db,
    } = scene(&Backend::Sqlite).await;
    let sha = github.pulls()[0].head_sha.clone();
    github.set_status(
        REPO,
        &sha,
        "ci/build",
        "success",
        "https://ci.example.com/7",
    );
    github.set_check_run(REPO, &sha, "test", "completed", Some("success"));

    let tab = chromium
        .open_on(&format!("{}/", server.base_url), PHONE)
        .await;
    sign_in(&mut chromium, &tab, alice.token().unwrap()).await;
    chromium.wait_for(&tab, &text("#who"), "alice").await;
    let url = json!({ "url": format!("{}/#/task/{task}", server.base_url) });
    chromium.call("Page.navigate", url, Some(&tab)).await;
    chromium.wait_for(&tab, &text("#checks"), "test").await;
    let lines = "[...document.querySelectorAll('#checks li')].map(l => l.textContent).join('|')";
    assert_eq!(
        chromium.text_of(&tab, lines).await,
        "passed ci/build|passed test"
    );
    let state = chromium.text_of(&tab, &text("#pr-state")).await;
    assert!(state.starts_with("Open"), "{state}");

    click(&mut chromium, &tab, "#merge").await;
    let open = "document.querySelector('#merge-dialog').open ? 'open' : 'closed'";
    chromium.wait_for(&tab, open, "open").await;
    let asked = chromium.text_of(&tab, &text("#merge-dialog")).await;
    let named = format!("Merge {REPO}#{number}?");
    assert!(asked.contains(&named), "{asked}");
    assert!(asked.contains(BRANCH), "the branch is named: {asked}");
    assert!(
        !asked.contains("checks"),
        "no warning while all checks passed: {asked}"
    );
    assert!(!asked.contains("null"), "{asked}");
    let focused = chromium.text_of(&tab, "document.activeElement.id").await;
    assert_eq!(focused, "merge-cancel", "focus moves into the dialog");
    screenshot(&mut chromium, &tab, PHONE, "merge").await;
    let serious = dialog_findings(&mut chromium, &tab).await;
    assert!(serious.is_empty(), "the dialog: {serious:#?}");
    assert!(
        github.merges().is_empty(),
        "nothing merges before confirming"
    );

    click(&mut chromium, &tab, "#merge-confirm").await;
    chromium.wait_for(&tab, &text("#pr-state"), "Merged").await;
    chromium.wait_for(&tab, open, "closed").await;
    let merges = github.merges();
    assert_eq!(merges.len(), 1);
    assert_eq!(
        (merges[0].number, merges[0].sha.as_str()),
        (number, sha.as_str())
    );
    let merge_button = "document.querySelector('#merge') ? 'there' : 'gone'";
    assert_eq!(chromium.text_of(&tab, merge_button).await, "gone");
    server.stop().await;
}

/// A failed check makes the dialog say so and ask "Merge anyway"; a push after the page was
/// read is refused and said in the dialog, and the view shows the new head to merge instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_check_and_a_moved_head_are_said_before_anything_merges() {
    let Some(mut chromium) = Chromium::launch().await else {
        return;
    };
    let Scene {
        github,
        server,
        alice,
        task,
        number,
        db: _db,
    } = scene(&Backend::Sqlite).await;
    let seen = github.pulls()[0].head_sha.clone();
    github.set_status(
        REPO,
        &seen,
        "ci/build",
        "failure",
        "https://ci.example.com/8",
    );

    let tab = chromium
        .open_on(&format!("{}/", server.base_url), PHONE)
        .await;
    sign_in(&mut chromium, &tab, alice.token().unwrap()).await;
    chromium.wait_for(&tab, &text("#who"), "alice").await;
    let url = json!({ "url": format!("{}/#/task/{task}", server.base_url) });
    chromium.call("Page.navigate", url, Some(&tab)).await;
    chromium
        .wait_for(&tab, &text("#checks"), "failed ci/build")
        .await;
    let pushed = github.push_to_pull(REPO, number);

    click(&mut chromium, &tab, "#merge").await;
    chromium
        .wait_for(&tab, &text("#merge-dialog"), "Some checks failed.")
        .await;
    let button = chromium.text_of(&tab, &text("#merge-confirm")).await;
    assert_eq!(button, "Merge anyway");
    click(&mut chromium, &tab, "#merge-confirm").await;
    chromium
        .wait_for(
            &tab,
            &text("#merge-problem"),
            "new commits since you looked",
        )
        .await;
    assert!(github.merges().is_empty(), "a moved head is not merged");
    let disabled = "document.querySelector('#merge-confirm').disabled ? 'disabled' : 'enabled'";
    chromium.wait_for(&tab, disabled, "disabled").await;

    // Behind the dialog the view now shows the new head, which has no checks yet.
    click(&mut chromium, &tab, "#merge-cancel").await;
    chromium
        .wait_for(&tab, &text("#checks"), "No checks reported")
        .await;
    let focused = "document.activeElement ? document.activeElement.id : ''";
    click(&mut chromium, &tab, "#merge").await;
    chromium.wait_for(&tab, focused, "merge-cancel").await;
    let button = chromium.text_of(&tab, &text("#merge-confirm")).await;
    assert_eq!(button, "Merge");
    click(&mut chromium, &tab, "#merge-confirm").await;
    chromium.wait_for(&tab, &text("#pr-state"), "Merged").await;
    let merges = github.merges();
    assert_eq!(merges.len(), 1);
    assert_eq!(merges[0].sha, pushed, "the head the person saw last");
    server.stop().await;
}
