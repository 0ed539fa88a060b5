//! A fake GitHub for sign-in tests, served over real HTTP on port 0: the OAuth web flow
//! (authorize is simulated by [`FakeGitHubOAuth::approve`], the token endpoint checks the code,
//! the redirect URI and PKCE), the device flow (with `authorization_pending` and a scripted
//! `slow_down`), `/user`, `/user/orgs` and `/user/repos`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};

pub const CLIENT_ID: &str = "fake-client-id";
pub const CLIENT_SECRET: &str = "fake-client-secret";

#[derive(Clone)]
struct User {
    id: i64,
    login: String,
    orgs: Vec<String>,
    /// Full names (`owner/name`) of the repositories the user may reach, most recent first.
    repos: Vec<String>,
}

struct Grant {
    github_id: i64,
    redirect_uri: String,
    challenge: String,
}

struct Device {
    user_code: String,
    approved_by: Option<i64>,
    polls: usize,
}

#[derive(Default)]
struct Inner {
    users: HashMap<i64, User>,
    codes: HashMap<String, Grant>,
    devices: HashMap<String, Device>,
    /// access token → GitHub id
    tokens: HashMap<String, i64>,
    /// What the device poll answers first, one per poll, before the real state.
    device_script: Vec<&'static str>,
    /// When each device poll arrived.
    poll_times: Vec<Instant>,
    next: u64,
}

impl Inner {
    fn fresh(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}_{}", self.next, rand::random::<u64>())
    }
}

type Shared = Arc<Mutex<Inner>>;

pub struct FakeGitHubOAuth {
    /// Base URL; use it as both `github_web_url` and `github_api_url`.
    pub url: String,
    inner: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitHubOAuth {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeGitHubOAuth {
    pub async fn start() -> Self {
        Self::start_serving(None).await
    }

    /// Also serves the bare repositories under `repositories` over git's plain ("dumb") HTTP,
    /// like private repositories on GitHub: only to a request carrying, as HTTP Basic, a token
    /// this fake issued (`x-access-token:<token>`, as GitHub accepts).
    pub async fn start_with_repositories(repositories: std::path::PathBuf) -> Self {
        Self::start_serving(Some(repositories)).await
    }

    async fn start_serving(repositories: Option<std::path::PathBuf>) -> Self {
        let inner: Shared = Arc::default();
        let mut app = Router::new()
            .route("/login/oauth/access_token", post(access_token))
            .route("/login/device/code", post(device_code))
            .route("/user", get(user))
            .route("/user/orgs", get(user_orgs))
            .route("/user/repos", get(user_repos));
        if let Some(root) = repositories {
            let state = inner.clone();
            app = app.fallback(move |uri: axum::http::Uri, headers: HeaderMap| {
                let (root, state) = (root.clone(), state.clone());
                async move { private_file(&root, &state, uri.path(), &headers) }
            });
        }
        let app = app.with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, inner, server }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    pub fn add_user(&self, github_id: i64, login: &str, orgs: &[&str]) {
        self.lock().users.insert(
            github_id,
            User {
                id: github_id,
                login: login.to_string(),
                orgs: orgs.iter().map(|o| o.to_string()).collect(),
                repos: Vec::new(),
            },
        );
    }

    /// The repositories `github_id` may reach (`owner/name`), most recently pushed first.
    pub fn give_repositories(&self, github_id: i64, repos: &[&str]) {
        if let Some(user) = self.lock().users.get_mut(&github_id) {
            user.repos = repos.iter().map(|r| r.to_string()).collect();
        }
    }

    /// Every token this fake issued stops working, as when a person revokes the OAuth app.
    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// The user changes their login on GitHub; their id stays.
    pub fn rename_user(&self, github_id: i64, login: &str) {
        if let Some(user) = self.lock().users.get_mut(&github_id) {
            user.login = login.to_string();
        }
    }

    /// The person `github_id` approves on GitHub's authorize page: returns the address GitHub
    /// would send the browser back to (the `redirect_uri` with `code` and `state`).
    pub fn approve(&self, authorize_url: &str, github_id: i64) -> String {
        let url = url::Url::parse(authorize_url).expect("authorize URL");
        let param = |name: &str| {
            url.query_pairs()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
                .unwrap_or_else(|| panic!("authorize URL has no {name}"))
        };
        assert_eq!(param("client_id"), CLIENT_ID);
        assert_eq!(param("code_challenge_method"), "S256");
        let redirect_uri = param("redirect_uri");
        let mut inner = self.lock();
        let code = inner.fresh("code");
        inner.codes.insert(
            code.clone(),
            Grant {
                github_id,
                redirect_uri: redirect_uri.clone(),
                challenge: param("code_challenge"),
            },
        );
        let mut back = url::Url::parse(&redirect_uri).unwrap();
        back.query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", &param("state"));
        back.into()
    }

    /// The person `github_id` enters `user_code` on GitHub's device page.
    pub fn approve_device(&self, user_code: &str, github_id: i64) {
        let mut inner = self.lock();
        let device = inner
            .devices
            .values_mut()
            .find(|device| device.user_code == user_code)
            .expect("known user code");
        device.approved_by = Some(github_id);
    }

    /// Answers the next device polls with these errors, in order, whatever the device's state.
    pub fn script_device_polls(&self, answers: &[&'static str]) {
        self.lock().device_script = answers.to_vec();
    }

    /// When each device poll arrived, to check the client's pace.
    pub fn device_poll_times(&self) -> Vec<Instant> {
        self.lock().poll_times.clone()
    }

    /// The GitHub access tokens issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock().tokens.keys().cloned().collect()
    }
}

fn oauth_error(error: &str) -> Response {
    Json(json!({ "error": error, "error_description": error })).into_response()
}

async fn access_token(
    State(inner): State<Shared>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut inner = inner.lock().unwrap();
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return oauth_error("incorrect_client_credentials");
    }
    let github_id = if let Some(code) = form.get("code") {
        if form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET) {
            return oauth_error("incorrect_client_credentials");
        }
        let Some(grant) = inner.codes.remove(code) else {
            return oauth_error("bad_verification_code");
        };
        if form.get("redirect_uri") != Some(&grant.redirect_uri) {
            return oauth_error("redirect_uri_mismatch");
        }
        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
        if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != grant.challenge {
            return oauth_error("bad_verification_code");
        }
        grant.github_id
    } else if let Some(device_code) = form.get("device_code") {
        inner.poll_times.push(Instant::now());
        if !inner.device_script.is_empty() {
            let answer = inner.device_script.remove(0);
            return oauth_error(answer);
        }
        let Some(device) = inner.devices.get_mut(device_code) else {
            return oauth_error("expired_token");
        };
        device.polls += 1;
        match device.approved_by {
            Some(id) => {
                inner.devices.remove(device_code);
                id
            }
            None => return oauth_error("authorization_pending"),
        }
    } else {
        return oauth_error("unsupported_grant_type");
    };
    let token = inner.fresh("gho_fake");
    inner.tokens.insert(token.clone(), github_id);
    Json(json!({ "access_token": token, "token_type": "bearer", "scope": "repo" })).into_response()
}

async fn device_code(
    State(inner): State<Shared>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return (StatusCode::UNAUTHORIZED, "bad client").into_response();
    }
    let mut inner = inner.lock().unwrap();
    let device_code = inner.fresh("dev");
    let user_code = format!("{:04}-{:04}", inner.next, rand::random::<u16>() % 10_000);
    inner.devices.insert(
        device_code.clone(),
        Device {
            user_code: user_code.clone(),
            approved_by: None,
            polls: 0,
        },
    );
    Json(json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": "https://github.com/login/device",
        "expires_in": 900,
        "interval": 1,
    }))
    .into_response()
}

fn caller(inner: &Shared, headers: &HeaderMap) -> Option<User> {
    let token = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    let inner = inner.lock().unwrap();
    let id = inner.tokens.get(token)?;
    inner.users.get(id).cloned()
}

async fn user(State(inner): State<Shared>, headers: HeaderMap) -> Response {
    let Some(found) = caller(&inner, &headers) else {
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    };
    Json(json!({ "id": found.id, "login": found.login })).into_response()
}

async fn user_orgs(State(inner): State<Shared>, headers: HeaderMap) -> Response {
    let Some(found) = caller(&inner, &headers) else {
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    };
    let orgs: Vec<_> = found
        .orgs
        .iter()
        .map(|org| json!({ "login": org }))
        .collect();
    Json(json!(orgs)).into_response()
}

/// The caller's repositories as GitHub lists them (`sort=pushed`), with their clone URLs on
/// this fake's host.
async fn user_repos(State(inner): State<Shared>, headers: HeaderMap) -> Response {
    let Some(found) = caller(&inner, &headers) else {
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    };
    let host = headers.get("host").and_then(|h| h.to_str().ok());
    let host = host.unwrap_or("github.invalid");
    let repos: Vec<_> = found
        .repos
        .iter()
        .map(|name| {
            json!({ "full_name": name, "private": true,
                    "clone_url": format!("http://{host}/{name}.git"),
                    "html_url": format!("http://{host}/{name}") })
        })
        .collect();
    Json(json!(repos)).into_response()
}

/// A file of a served repository, for a caller with a token this fake issued.
fn private_file(
    root: &std::path::Path,
    state: &Shared,
    path: &str,
    headers: &HeaderMap,
) -> Response {
    let presented = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        })
        .and_then(|decoded| String::from_utf8(decoded).ok());
    let token = presented
        .as_deref()
        .and_then(|pair| pair.split_once(':'))
        .map(|(_, token)| token.to_string());
    let known = token.is_some_and(|token| state.lock().unwrap().tokens.contains_key(&token));
    if !known {
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Basic realm=\"GitHub\"")],
            "",
        )
            .into_response();
    }
    let relative = path.trim_start_matches('/');
    if relative
        .split('/')
        .any(|part| part == ".." || part.is_empty())
    {
        return StatusCode::NOT_FOUND.into_response();
    }
    match std::fs::read(root.join(relative)) {
        Ok(bytes) => bytes.into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}
