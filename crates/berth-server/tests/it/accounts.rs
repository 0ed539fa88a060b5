//! GitHub sign-in against a fake GitHub over real HTTP: the browser flow with its cookie and
//! `state`, the device flow through the client's code, the allow-list, admins and disabling.

use std::time::Duration;

use berth_client::Client;
use berth_proto::{CreateTask, Secret, TaskStatus};
use berth_testkit::github_oauth::{FakeGitHubOAuth, CLIENT_ID, CLIENT_SECRET};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};

on_both_backends!(
    web_sign_in_sets_a_session_cookie,
    forged_or_replayed_state_is_refused,
    device_flow_ends_with_an_api_token,
    allow_list_refuses_others,
    disabled_user_is_locked_out,
    a_login_already_taken_gets_a_distinct_name,
);

/// A 32-byte key, base64, as `openssl rand -base64 32` makes.
pub fn test_key(byte: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

/// A database whose server signs in with the fake GitHub.
pub async fn github_database(backend: &Backend, fake: &FakeGitHubOAuth) -> TestDatabase {
    let mut db = TestDatabase::new(backend).await;
    db.settings.github_client_id = Some(CLIENT_ID.into());
    db.settings.github_client_secret = Some(Secret::new(CLIENT_SECRET));
    db.shared.github_web_url = fake.url.clone();
    db.shared.github_api_url = fake.url.clone();
    let keys = berth_store::sealing::Settings {
        encryption_key: Some(Secret::new(test_key(1))),
        ..Default::default()
    };
    db.shared.keyring = keys.keyring().unwrap();
    db.settings.validate().expect("valid configuration");
    db
}

pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn cookie_value(set_cookies: &[String], name: &str) -> Option<String> {
    set_cookies.iter().find_map(|c| {
        let first = c.split(';').next()?;
        let (key, value) = first.split_once('=')?;
        (key == name && !value.is_empty()).then(|| value.to_string())
    })
}

/// What a browser goes through: Berth → GitHub (approved by `github_id`) → Berth's callback.
/// Returns the callback's answer and the state cookie that went with it.
pub async fn browser_round_trip(
    server: &TestServer,
    fake: &FakeGitHubOAuth,
    github_id: i64,
) -> (reqwest::Response, String, String) {
    let http = no_redirects();
    let start = http
        .get(format!("{}/v1/auth/github/login", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let state_cookie = cookie_value(&set_cookies(&start), "berth_oauth_state").unwrap();
    let authorize = start.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(authorize.starts_with(&format!("{}/login/oauth/authorize?", fake.url)));
    assert!(authorize.contains("code_challenge="), "{authorize}");
    // GitHub sends the browser to the configured public address; here, that is the server.
    let callback = fake
        .approve(&authorize, github_id)
        .replace("https://berth.example", &server.base_url);
    let answer = http
        .get(&callback)
        .header(COOKIE, format!("berth_oauth_state={state_cookie}"))
        .send()
        .await
        .unwrap();
    (answer, callback, state_cookie)
}

/// Signs `github_id` in through the browser flow; returns the session cookie's value.
pub async fn web_sign_in(server: &TestServer, fake: &FakeGitHubOAuth, github_id: i64) -> String {
    let (answer, _, _) = browser_round_trip(server, fake, github_id).await;
    assert_eq!(
        answer.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        answer.text().await
    );
    let cookies = set_cookies(&answer);
    cookie_value(&cookies, "berth_session")
        .unwrap_or_else(|| panic!("session cookie in {cookies:?} {:?}", answer.headers()))
}

/// A GET or POST with the session cookie.
pub async fn with_session(
    server: &TestServer,
    session: &str,
    method: reqwest::Method,
    path: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .request(method, format!("{}{path}", server.base_url))
        .header(COOKIE, format!("berth_session={session}"))
        .send()
        .await
        .unwrap()
}

/// Signs `github_id` in through the device flow, as `berth login` does; returns a client.
pub async fn device_sign_in(server: &TestServer, fake: &FakeGitHubOAuth, github_id: i64) -> Client {
    let created = berth_client::device::login(&server.base_url, "laptop", |code| {
        fake.approve_device(&code.user_code, github_id)
    })
    .await
    .expect("device sign-in");
    Client::new(&server.base_url, Some(created.token)).unwrap()
}

async fn web_sign_in_sets_a_session_cookie(backend: Backend) {
    let fake = FakeGitHubOAuth::start().await;
    fake.add_user(101, "alice", &[]);
    let db = github_database(&backend, &fake).await;
    let server = TestServer::start(&db).await;

    let (answer, _, _) = browser_round_trip(&server, &fake, 101).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let cookies = set_cookies(&answer);
    let session_cookie = cookies
        .iter()
        .find(|c| c.starts_with("berth_session="))
        .unwrap();
    assert!(session_cookie.contains("HttpOnly"), "{session_cookie}");
    assert!(session_cookie.contains("SameSite=Lax"), "{session_cookie}");
    assert!(
        !session_cookie.contains("Secure"),
        "plain HTTP: {session_cookie}"
    );
    let session = cookie_value(&cookies, "berth_session").unwrap();

    let me = with_session(&server, &session, reqwest::Method::GET, "/v1/me").await;
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["name"], "alice");

    // A renamed GitHub login is the same Berth user.
    fake.rename_user(101, "alice-renamed");
    let again = web_sign_in(&server, &fake, 101).await;
    let me2: Value = with_session(&server, &again, reqwest::Method::GET, "/v1/me")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me2["user_id"], me["user_id"]);
    assert_eq!(me2["name"], "alice-renamed");

    // Signing out ends the session.
    let out = with_session(&server, &session, reqwest::Method::POST, "/v1/auth/logout").await;
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let me = with_session(&server, &session, reqwest::Method::GET, "/v1/me").await;
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;

    // Served over TLS (public_url https), the cookie is Secure; a session expires.
    let mut db = db;
    db.settings.public_url = Some("https://berth.example".into());
    db.settings.session_ttl_secs = 60;
    let server = TestServer::start(&db).await;
    let (answer, _, _) = browser_round_trip(&server, &fake, 101).await;
    let cookies = set_cookies(&answer);
    assert!(cookies
        .iter()
        .any(|c| c.starts_with("berth_session=") && c.contains("; Secure")));
    assert!(cookies.iter().any(|c| c.contains("Max-Age=60")));
    server.stop().await;
}

async fn forged_or_replayed_state_is_refused(backend: Backend) {
    let fake = FakeGitHubOAuth::start().await;
    fake.add_user(101, "alice", &[]);
    let db = github_database(&backend, &fake).await;
    let server = TestServer::start(&db).await;
    let http = no_redirects();

    // A state Berth never made, even with a matching cookie.
    let forged = http
        .get(format!(
            "{}/v1/auth/github/callback?code=x&state=forged",
            server.base_url
        ))
        .header(COOKIE, "berth_oauth_state=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    let body: Value = forged.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_state");

    // A real callback replayed after it was used.
    let (first, callback, state_cookie) = browser_round_trip(&server, &fake, 101).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    let replay = http
        .get(&callback)
        .header(COOKIE, format!("berth_oauth_state={state_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);

    // A real state, but arriving in another browser (no state cookie): login CSRF.
    let start = http
        .get(format!("{}/v1/auth/github/login", server.base_url))
        .send()
        .await
        .unwrap();
    let authorize = start.headers()[LOCATION].to_str().unwrap().to_string();
    let callback = fake.approve(&authorize, 101);
    let elsewhere = http.get(&callback).send().await.unwrap();
    assert_eq!(elsewhere.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
}

async fn device_flow_ends_with_an_api_token(backend: Backend) {
    let fake = FakeGitHubOAuth::start().await;
    fake.add_user(202, "bob", &[]);
    let db = github_database(&backend, &fake).await;
    let server = TestServer::start(&db).await;

    fake.script_device_polls(&["authorization_pending", "slow_down"]);
    let mut shown = None;
    let created = berth_client::device::login(&server.base_url, "phone", |code| {
        shown = Some((code.user_code.clone(), code.verification_uri.clone()));
        fake.approve_device(&code.user_code, 202);
    })
    .await
    .expect("device sign-in");
    let (user_code, uri) = shown.expect("the code was shown");
    assert!(!user_code.is_empty() && uri.starts_with("https://"));

    // Polled at the interval asked (1 s), then 5 s slower after `slow_down`.
    let polls = fake.device_poll_times();
    assert_eq!(polls.len(), 3, "pending, slow_down, then the token");
    assert!(polls[1] - polls[0] >= Duration::from_millis(950));
    assert!(polls[2] - polls[1] >= Duration::from_millis(5950));

    let bob = Client::new(&server.base_url, Some(created.token)).unwrap();
    let me = bob.me().await.unwrap();
    assert_eq!(me.name, "bob");
    let tokens = bob.list_tokens().await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].name, "phone");
    bob.revoke_token(tokens[0].id).await.unwrap();
    assert_eq!(
        bob.me().await.unwrap_err().status(),
        Some(StatusCode::UNAUTHORIZED)
    );
    server.stop().await;
}

async fn allow_list_refuses_others(backend: Backend) {
    let fake = FakeGitHubOAuth::start().await;
    fake.add_user(1, "alice", &[]);
    fake.add_user(2, "bob", &["acme"]);
    fake.add_user(3, "carol", &["other"]);
    let mut db = github_database(&backend, &fake).await;
    db.settings.allowed_logins = vec!["alice".into()];
    db.settings.allowed_orgs = vec!["ACME".into()];
    let server = TestServer::start(&db).await;

    web_sign_in(&server, &fake, 1).await;
    web_sign_in(&server, &fake, 2).await;
    let (refused, _, _) = browser_round_trip(&server, &fake, 3).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "sign_in_refused");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not allowed to sign in"));

    // Through the device flow too, and nothing is left behind for carol.
    let err = berth_client::device::login(&server.base_url, "x", |code| {
        fake.approve_device(&code.user_code, 3)
    })
    .await
    .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
    let logins: Vec<_> = server
        .store
        .list_accounts()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|a| a.login)
        .collect();
    assert_eq!(logins, ["alice", "bob"]);
    server.stop().await;
}

async fn disabled_user_is_locked_out(backend: Backend) {
    let fake = FakeGitHubOAuth::start().await;
    fake.add_user(1, "admin", &[]);
    fake.add_user(2, "mallory", &[]);
    let db = github_database(&backend, &fake).await;
    let server = TestServer::start(&db).await;

    let admin = web_sign_in(&server, &fake, 1).await;
    let mallory_session = web_sign_in(&server, &fake, 2).await;
    let mallory = device_sign_in(&server, &fake, 2).await;
    let (task, _) = mallory
        .create_task(&CreateTask::new("https://github.com/o/r", "work"), None)
        .await
        .unwrap();

    // Only the first user is admin.
    let denied = with_session(
        &server,
        &mallory_session,
        reqwest::Method::GET,
        "/v1/admin/users",
    )
    .await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let users: Value = with_session(&server, &admin, reqwest::Method::GET, "/v1/admin/users")
        .await
        .json()
        .await
        .unwrap();
    let users = users["users"].as_array().unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(users[0]["is_admin"], true);
    assert_eq!(users[1]["is_admin"], false);
    let mallory_id = users[1]["id"].as_str().unwrap().to_string();

    let disabled = with_session(
        &server,
        &admin,
        reqwest::Method::POST,
        &format!("/v1/admin/users/{mallory_id}/disable"),
    )
    .await;
    assert_eq!(disabled.status(), StatusCode::OK);

    assert_eq!(
        mallory.me().await.unwrap_err().status(),
        Some(StatusCode::UNAUTHORIZED)
    );
    let me = with_session(&server, &mallory_session, reqwest::Method::GET, "/v1/me").await;
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    let owner: berth_proto::UserId = serde_json::from_str(&format!("{mallory_id:?}")).unwrap();
    let cancelled = server
        .store
        .get_task(owner, task.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    // Signing in again does not bring them back.
    let (again, _, _) = browser_round_trip(&server, &fake, 2).await;
    assert_eq!(again.status(), StatusCode::FORBIDDEN);

    let audit: Value = with_session(&server, &admin, reqwest::Method::GET, "/v1/admin/audit")
        .await
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in ["sign_in", "token.create", "admin.disable_user"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    server.stop().await;
}

async fn a_login_already_taken_gets_a_distinct_name(backend: Backend) {
    let fake = FakeGitHubOAuth::start().await;
    fake.add_user(101, "alice", &[]);
    let db = github_database(&backend, &fake).await;
    let server = TestServer::start(&db).await;
    let local = server.user("alice").await;
    let session = web_sign_in(&server, &fake, 101).await;
    let me: Value = with_session(&server, &session, reqwest::Method::GET, "/v1/me")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "alice-101");
    assert_ne!(
        serde_json::to_value(local.me().await.unwrap().user_id).unwrap(),
        me["user_id"],
        "the GitHub user does not take over the local one"
    );
    server.stop().await;
}
