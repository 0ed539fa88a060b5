//! `GET /v1/me/github/repositories`: the caller's GitHub repositories, asked of (the fake)
//! GitHub with the token their GitHub sign-in stored, and the new-task form that offers them.

use berth_proto::CreateTask;
use berth_testkit::chromium::{Chromium, PHONE};
use berth_testkit::github_oauth::FakeGitHubOAuth;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::accounts::{device_sign_in, github_database, web_sign_in, with_session};
use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};

on_both_backends!(
    a_github_sign_in_lists_its_repositories_and_others_are_told_why_not,
    where_sign_in_is_off_there_is_nothing_to_list,
);

const PATH: &str = "/v1/me/github/repositories";

async fn error_code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (status, body["error"]["code"].as_str().unwrap().to_string())
}

async fn a_github_sign_in_lists_its_repositories_and_others_are_told_why_not(backend: Backend) {
    let fake = FakeGitHubOAuth::start().await;
    fake.add_user(101, "alice", &[]);
    fake.give_repositories(101, &["alice/site", "acme/api"]);
    let db = github_database(&backend, &fake).await;
    let server = TestServer::start(&db).await;
    let session = web_sign_in(&server, &fake, 101).await;

    let answer = with_session(&server, &session, Method::GET, PATH).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let listed: Value = answer.json().await.unwrap();
    let host = fake.url.trim_start_matches("http://");
    assert_eq!(
        listed,
        json!({ "repositories": [
            { "full_name": "alice/site", "clone_url": format!("http://{host}/alice/site.git"), "private": true },
            { "full_name": "acme/api", "clone_url": format!("http://{host}/acme/api.git"), "private": true },
        ] }),
        "most recently pushed first, as GitHub lists them"
    );

    // Signed in with a pasted API token only: no GitHub token to ask with.
    let bob = server.user("bob").await;
    let answer = reqwest::Client::new()
        .get(format!("{}{PATH}", server.base_url))
        .bearer_auth(bob.token().unwrap())
        .send()
        .await
        .unwrap();
    let expected = (StatusCode::NOT_FOUND, "no_github_token".to_string());
    assert_eq!(error_code(answer).await, expected);

    // The person revoked Berth on GitHub: the stored token no longer works.
    fake.revoke_tokens();
    let answer = with_session(&server, &session, Method::GET, PATH).await;
    let expected = (StatusCode::BAD_GATEWAY, "github_unavailable".to_string());
    assert_eq!(error_code(answer).await, expected);
    server.stop().await;
}

async fn where_sign_in_is_off_there_is_nothing_to_list(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let answer = reqwest::Client::new()
        .get(format!("{}{PATH}", server.base_url))
        .bearer_auth(alice.token().unwrap())
        .send()
        .await
        .unwrap();
    let expected = (StatusCode::NOT_FOUND, "sign_in_disabled".to_string());
    assert_eq!(error_code(answer).await, expected);
    server.stop().await;
}

/// The new-task form offers the repositories the caller used, then their GitHub ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_task_form_offers_the_callers_github_repositories() {
    let Some(mut chromium) = Chromium::launch().await else {
        return;
    };
    let fake = FakeGitHubOAuth::start().await;
    fake.add_user(101, "alice", &[]);
    fake.give_repositories(101, &["alice/site", "acme/api"]);
    let db = github_database(&Backend::Sqlite, &fake).await;
    let server = TestServer::start(&db).await;
    let alice = device_sign_in(&server, &fake, 101).await;
    let used = "https://github.com/o/used";
    alice
        .create_task(&CreateTask::new(used, "an earlier task"), None)
        .await
        .unwrap();
    let session = web_sign_in(&server, &fake, 101).await;
    let tab = chromium.open_on("about:blank", PHONE).await;
    let cookie = json!({ "name": "berth_session", "value": session, "url": server.base_url,
                         "httpOnly": true, "sameSite": "Lax" });
    chromium.call("Network.setCookie", cookie, Some(&tab)).await;
    let url = json!({ "url": format!("{}/#/new", server.base_url) });
    chromium.call("Page.navigate", url, Some(&tab)).await;
    let offered = "[...document.querySelectorAll('#repo-list option')]\
        .map((o) => o.label ? o.value + ' (' + o.label + ')' : o.value).join(' | ')";
    let host = fake.url.trim_start_matches("http://");
    let listed = chromium.wait_for(&tab, offered, "acme/api").await;
    assert_eq!(
        listed,
        format!("{used} | http://{host}/alice/site.git (alice/site) | http://{host}/acme/api.git (acme/api)")
    );
    server.stop().await;
}
