//! The fake GitHub pulls API over HTTP: create, GitHub's refusals, and listing by head.

use std::sync::Arc;

use berth_testkit::{FakeGitHubApi, GitServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

const TOKEN: &str = "ghp_fake";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent("berth-test")
        .build()
        .unwrap()
}

async fn create(api: &FakeGitHubApi, repo: &str, body: Value) -> (StatusCode, Value) {
    let response = client()
        .post(format!("{}/repos/{repo}/pulls", api.url()))
        .bearer_auth(TOKEN)
        .header("X-GitHub-Api-Version", "2022-11-28")
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn list(api: &FakeGitHubApi, repo: &str, query: &str) -> Vec<Value> {
    let response = client()
        .get(format!("{}/repos/{repo}/pulls?{query}", api.url()))
        .header("Authorization", format!("token {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn pull(head: &str) -> Value {
    json!({"title": "Greet berth", "head": head, "base": "main", "body": "Says hello."})
}

#[tokio::test]
async fn creates_and_lists_pull_requests() {
    let api = FakeGitHubApi::start(TOKEN).await;
    let (status, created) = create(&api, "acme/widgets", pull("acme:berth/one")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["number"], 1);
    assert_eq!(created["state"], "open");
    assert_eq!(created["title"], "Greet berth");
    assert_eq!(created["body"], "Says hello.");
    assert_eq!(created["head"]["ref"], "berth/one");
    assert_eq!(created["head"]["label"], "acme:berth/one");
    assert_eq!(created["base"]["ref"], "main");
    let html_url = format!("{}/acme/widgets/pull/1", api.url());
    assert_eq!(created["html_url"], html_url.as_str());
    assert_eq!(
        created["url"],
        format!("{}/repos/acme/widgets/pulls/1", api.url()).as_str()
    );

    let (status, second) = create(&api, "acme/widgets", pull("berth/two")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(second["number"], 2);
    // Numbers count per repository.
    let (_, elsewhere) = create(&api, "acme/gadgets", pull("berth/one")).await;
    assert_eq!(elsewhere["number"], 1);
    assert_ne!(elsewhere["id"], created["id"]);

    let found = list(&api, "acme/widgets", "head=acme:berth/one&state=open").await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["html_url"], html_url.as_str());
    assert_eq!(list(&api, "acme/widgets", "").await.len(), 2);
    assert_eq!(list(&api, "acme/widgets", "state=all").await.len(), 2);
    assert!(list(&api, "acme/widgets", "state=closed").await.is_empty());
    assert!(list(&api, "acme/widgets", "head=acme:nope")
        .await
        .is_empty());

    let pulls = api.pulls();
    assert_eq!(pulls.len(), 3);
    assert_eq!(pulls[0].repo, "acme/widgets");
    assert_eq!(pulls[0].head, "berth/one");
    assert_eq!(pulls[0].base, "main");
    assert_eq!(pulls[0].html_url, html_url);
    assert!(!pulls[0].draft);

    let requests = api.requests();
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/repos/acme/widgets/pulls");
    assert_eq!(requests[0].user_agent.as_deref(), Some("berth-test"));
    assert_eq!(requests[0].api_version.as_deref(), Some("2022-11-28"));
    assert_eq!(requests.last().unwrap().api_version, None);
}

#[tokio::test]
async fn a_second_pull_request_from_the_same_head_is_refused() {
    let api = FakeGitHubApi::start(TOKEN).await;
    let (status, _) = create(&api, "acme/widgets", pull("berth/one")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = create(&api, "acme/widgets", pull("acme:berth/one")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["message"], "Validation Failed");
    assert_eq!(body["errors"][0]["code"], "custom");
    assert_eq!(
        body["errors"][0]["message"],
        "A pull request already exists for acme:berth/one."
    );
    assert_eq!(api.pulls().len(), 1);
}

#[tokio::test]
async fn missing_fields_and_bad_json_are_refused() {
    let api = FakeGitHubApi::start(TOKEN).await;
    let (status, body) = create(&api, "acme/widgets", json!({"head": "berth/one"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["message"], "Validation Failed");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|error| error["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["title", "base"]);

    let response = client()
        .post(format!("{}/repos/acme/widgets/pulls", api.url()))
        .bearer_auth(TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(api.pulls().is_empty());
}

#[tokio::test]
async fn bad_token_is_401_and_no_user_agent_is_403() {
    let api = FakeGitHubApi::start(TOKEN).await;
    let url = format!("{}/repos/acme/widgets/pulls", api.url());

    let response = client()
        .post(&url)
        .bearer_auth("wrong")
        .json(&pull("berth/one"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "Bad credentials");
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // reqwest sends no User-Agent unless told to.
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&pull("berth/one"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await.unwrap();
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("User-Agent header"));

    assert!(api.pulls().is_empty());
    let requests = api.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[2].user_agent, None);
}

#[tokio::test]
async fn head_must_exist_on_the_git_server() {
    let git = Arc::new(GitServer::start().await);
    git.create_repo("acme/widgets", &[("a.txt", "a\n")]);
    let api = FakeGitHubApi::start(TOKEN).await;
    let checker = git.clone();
    api.with_branches(move |repo, branch| checker.branch_head(repo, branch).is_some());

    let (status, body) = create(&api, "acme/widgets", pull("acme:berth/one")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["errors"],
        json!([{"resource": "PullRequest", "field": "head", "code": "invalid"}])
    );
    let (status, _) = create(&api, "acme/widgets", pull("main")).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn unknown_routes_are_json_404() {
    let api = FakeGitHubApi::start(TOKEN).await;
    let response = client()
        .get(format!("{}/repos/acme/widgets/issues", api.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "Not Found");
}
