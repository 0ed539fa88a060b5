//! Every operation of the OpenAPI document, walked with bad input: each answer is a JSON error
//! with the status and the code a client can act on, and a caller without the right to an
//! operation gets 401 or 403 whatever else is wrong with the request.

use std::collections::BTreeMap;

use berth_client::Client;
use berth_proto::ErrorBody;
use berth_server::openapi::ADMIN_ROLE;
use berth_testkit::github_oauth::FakeGitHubOAuth;
use reqwest::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::accounts::github_database;
use crate::harness::{on_both_backends, Backend, TestDatabase, TestServer};

on_both_backends!(
    bad_input_to_every_operation_gets_a_json_error,
    without_the_right_nothing_else_is_told,
    methods_and_routes_that_are_not_there_get_a_json_error,
    sign_in_operations_are_not_there_where_sign_in_is_off,
    streams_check_credentials_before_anything_else,
    a_body_without_a_length_is_cut_off_at_the_limit,
    the_github_webhook_is_not_there_where_the_app_is_off,
    push_is_not_there_where_it_is_off,
);

/// The walking server's `max_body_bytes`, small so that an oversized body is cheap to send.
const MAX_BODY: usize = 4096;
/// An id of the right shape that names nothing.
const UNKNOWN_ID: &str = "0190c0de-0000-7000-8000-000000000000";

/// One operation of the document, and the kinds of input it takes.
struct Operation {
    method: Method,
    path: String,
    secured: bool,
    admin_only: bool,
    json_body: bool,
    /// The query parameters, each with whether it is an integer.
    query: Vec<(String, bool)>,
    /// The description of each answer it lists, by status.
    responses: BTreeMap<String, String>,
}

impl Operation {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    fn has_path_parameters(&self) -> bool {
        self.path.contains('{')
    }

    /// The path with every parameter set to `id`.
    fn path_with(&self, id: &str) -> String {
        self.path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    id
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// One bad query string per parameter: an integer too large for any integer type, or any
    /// other parameter given twice.
    fn bad_queries(&self) -> Vec<String> {
        self.query
            .iter()
            .map(|(name, integer)| match integer {
                true => format!("{name}=99999999999999999999999"),
                false => format!("{name}=a&{name}=b"),
            })
            .collect()
    }
}

/// The operations of the document the server serves.
fn operations() -> Vec<Operation> {
    let document = serde_json::to_value(berth_server::openapi::document()).unwrap();
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations.push(Operation::read(path, method, operation));
        }
    }
    assert!(operations.len() > 20, "the document lists the API");
    operations
}

impl Operation {
    /// The operation as the document describes it.
    fn read(path: &str, method: &str, operation: &Value) -> Self {
        let parameters = operation["parameters"].as_array().cloned();
        let query = parameters
            .unwrap_or_default()
            .iter()
            .filter(|parameter| parameter["in"] == "query")
            .map(|parameter| {
                let kind = &parameter["schema"]["type"];
                let integer = kind == "integer"
                    || kind
                        .as_array()
                        .is_some_and(|kinds| kinds.contains(&"integer".into()));
                (parameter["name"].as_str().unwrap().to_string(), integer)
            })
            .collect();
        let requirements = operation["security"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let roles: Vec<&Value> = requirements
            .iter()
            .filter_map(Value::as_object)
            .flat_map(|schemes| schemes.values())
            .filter_map(Value::as_array)
            .flatten()
            .collect();
        let responses = operation["responses"].as_object().unwrap().iter();
        let responses = responses.map(|(status, answer)| {
            let description = answer["description"].as_str().unwrap_or_default();
            (status.clone(), description.to_string())
        });
        Self {
            method: method.to_uppercase().parse().unwrap(),
            path: path.to_string(),
            secured: !requirements.is_empty(),
            admin_only: roles.contains(&&Value::from(ADMIN_ROLE)),
            json_body: operation["requestBody"]["content"]["application/json"].is_object(),
            query,
            responses: responses.collect(),
        }
    }
}

/// A request as the walk sends it.
#[derive(Clone, Default)]
struct Bad<'a> {
    path_id: Option<&'a str>,
    query: Option<String>,
    content_type: Option<&'a str>,
    body: Option<Vec<u8>>,
    authorization: Option<String>,
}

/// Sends `request` to `operation` and checks that the answer is a JSON error with `status`
/// and `code`, and that the document lists that code under that status.
async fn expect(
    server: &TestServer,
    operation: &Operation,
    request: Bad<'_>,
    status: StatusCode,
    code: &str,
) {
    let path = operation.path_with(request.path_id.unwrap_or(UNKNOWN_ID));
    let url = match &request.query {
        Some(query) => format!("{}{path}?{query}", server.base_url),
        None => format!("{}{path}", server.base_url),
    };
    let mut builder = reqwest::Client::new().request(operation.method.clone(), &url);
    if let Some(authorization) = &request.authorization {
        builder = builder.header(AUTHORIZATION, authorization);
    }
    if let Some(content_type) = request.content_type {
        builder = builder.header(CONTENT_TYPE, content_type);
    }
    if let Some(body) = request.body.clone() {
        builder = builder.body(body);
    }
    let response = builder.send().await.unwrap();
    let what = format!(
        "{} (sent {url} with {:?} {:?})",
        operation.name(),
        request.content_type,
        request.body.as_deref().map(String::from_utf8_lossy)
    );
    assert_json_error(response, status, code, &what).await;
    let listed = operation.responses.get(status.as_str());
    assert!(
        listed.is_some_and(|description| description.contains(&format!("`{code}`"))),
        "{}: the document lists no {code} under {status}: {listed:?}",
        operation.name()
    );
}

async fn assert_json_error(
    response: reqwest::Response,
    status: StatusCode,
    code: &str,
    what: &str,
) -> reqwest::header::HeaderMap {
    let headers = response.headers().clone();
    let got = response.status();
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|value| value.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    assert_eq!(got, status, "{what}: {text}");
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "{what}: {text}"
    );
    let body: ErrorBody = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{what}: not an error body ({err}): {text}"));
    assert_eq!(body.error.code, code, "{what}: {text}");
    assert!(!body.error.message.is_empty(), "{what}");
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(headers[WWW_AUTHENTICATE], "Bearer", "{what}");
    }
    headers
}

fn bearer(client: &Client) -> String {
    format!("Bearer {}", client.token().unwrap())
}

/// Everything that can be wrong with a request to `operation` at once.
fn everything_wrong(operation: &Operation) -> Bad<'static> {
    Bad {
        path_id: Some("not-an-id"),
        query: Some(operation.bad_queries().join("&")).filter(|query| !query.is_empty()),
        content_type: Some("text/plain"),
        body: Some(b"{\"not json".to_vec()),
        authorization: None,
    }
}

/// A database whose server signs in with the fake GitHub, has Web Push on and takes small
/// bodies only.
async fn walking_database(backend: &Backend, fake: &FakeGitHubOAuth) -> TestDatabase {
    let mut db = github_database(backend, fake).await;
    db.settings.web_push_vapid_key = Some(berth_proto::Secret::new(crate::push::VAPID_KEY));
    db.settings.web_push_subject = Some("mailto:ops@example.com".into());
    db.settings.max_body_bytes = MAX_BODY;
    db.settings.max_prompt_bytes = MAX_BODY / 2;
    db
}

async fn without_the_right_nothing_else_is_told(backend: Backend) {
    let fake = FakeGitHubOAuth::start().await;
    let db = walking_database(&backend, &fake).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    for operation in operations() {
        if operation.secured {
            let credentials = [
                None,
                Some("Bearer berth_not-a-real-token".to_string()),
                Some("Basic dXNlcjpwYXNz".to_string()),
                Some("Bearer".to_string()),
            ];
            for authorization in credentials {
                let request = Bad {
                    authorization,
                    ..everything_wrong(&operation)
                };
                let status = StatusCode::UNAUTHORIZED;
                expect(&server, &operation, request, status, "unauthorized").await;
            }
            if operation.json_body {
                let oversized = Bad {
                    content_type: Some("application/json"),
                    body: Some(vec![b' '; MAX_BODY + 1]),
                    ..Bad::default()
                };
                let status = StatusCode::UNAUTHORIZED;
                expect(&server, &operation, oversized, status, "unauthorized").await;
            }
        }
        if operation.admin_only {
            let request = Bad {
                authorization: Some(bearer(&alice)),
                ..everything_wrong(&operation)
            };
            let status = StatusCode::FORBIDDEN;
            expect(&server, &operation, request, status, "forbidden").await;
        }
    }
    server.stop().await;
}

async fn bad_input_to_every_operation_gets_a_json_error(backend: Backend) {
    let fake = FakeGitHubOAuth::start().await;
    let db = walking_database(&backend, &fake).await;
    let server = TestServer::start(&db).await;
    let admin = server.admin("root").await;
    let alice = server.user("alice").await;
    // The GitHub webhook's credential is its signature, checked before the body is read:
    // its bad input is walked where the App is off (below) and signed in tests/it/github.rs.
    let walked = operations()
        .into_iter()
        .filter(|operation| operation.path != GITHUB_WEBHOOK);
    for operation in walked {
        let authorization = match (operation.secured, operation.admin_only) {
            (false, _) => None,
            (true, false) => Some(bearer(&alice)),
            (true, true) => Some(bearer(&admin)),
        };
        let right = Bad {
            authorization,
            ..Bad::default()
        };
        if operation.has_path_parameters() {
            let request = Bad {
                path_id: Some("not-an-id"),
                ..right.clone()
            };
            expect(
                &server,
                &operation,
                request,
                StatusCode::NOT_FOUND,
                "not_found",
            )
            .await;
        }
        for query in operation.bad_queries() {
            let request = Bad {
                query: Some(query),
                ..right.clone()
            };
            let status = StatusCode::BAD_REQUEST;
            expect(&server, &operation, request, status, "invalid_query").await;
        }
        if operation.json_body {
            let json = Some("application/json");
            let bodies: [(Option<&str>, &[u8], StatusCode, &str); 6] = [
                (
                    json,
                    b"{\"not json",
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                ),
                (json, b"", StatusCode::BAD_REQUEST, "invalid_json"),
                (
                    json,
                    b"[]",
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                ),
                (
                    json,
                    b"{\"name\": 7, \"prompt\": 7}",
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                ),
                (
                    Some("text/plain"),
                    b"{}",
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                ),
                (
                    None,
                    b"{}",
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                ),
            ];
            for (content_type, body, status, code) in bodies {
                let request = Bad {
                    content_type,
                    body: Some(body.to_vec()),
                    ..right.clone()
                };
                expect(&server, &operation, request, status, code).await;
            }
            let oversized = Bad {
                content_type: json,
                body: Some(vec![b' '; MAX_BODY + 1]),
                ..right.clone()
            };
            let status = StatusCode::PAYLOAD_TOO_LARGE;
            expect(&server, &operation, oversized, status, "body_too_large").await;
        }
    }
    server.stop().await;
}

async fn methods_and_routes_that_are_not_there_get_a_json_error(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let operations = operations();
    let http = reqwest::Client::new();
    let mut paths: Vec<&str> = operations.iter().map(|op| op.path.as_str()).collect();
    paths.dedup();
    for path in paths {
        let documented: Vec<&Method> = operations
            .iter()
            .filter(|op| op.path == path)
            .map(|op| &op.method)
            .collect();
        let others = [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ];
        for method in others.iter().filter(|m| !documented.contains(m)) {
            let url = format!("{}{}", server.base_url, path.replace("{id}", UNKNOWN_ID));
            let response = http.request(method.clone(), &url).send().await.unwrap();
            let what = format!("{method} {path}");
            let status = StatusCode::METHOD_NOT_ALLOWED;
            let headers = assert_json_error(response, status, "method_not_allowed", &what).await;
            let allow = headers.get(ALLOW).map(|v| v.to_str().unwrap().to_string());
            for method in &documented {
                assert!(
                    allow
                        .as_deref()
                        .is_some_and(|allow| allow.contains(method.as_str())),
                    "{what}: Allow {allow:?} names {method}"
                );
            }
        }
    }
    for path in [
        "/v1/nothing-here",
        "/v1/tasks/",
        "/v2/tasks",
        "/v1/tasks/a/b/c",
    ] {
        let response = http
            .get(format!("{}{path}", server.base_url))
            .send()
            .await
            .unwrap();
        assert_json_error(response, StatusCode::NOT_FOUND, "not_found", path).await;
    }
    server.stop().await;
}

async fn sign_in_operations_are_not_there_where_sign_in_is_off(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    // Signing out, and the web app's sign-in with a token, work without GitHub.
    let without_github = ["/v1/auth/logout", "/v1/auth/session"];
    let sign_in = operations().into_iter().filter(|op| {
        op.path.starts_with("/v1/auth/") && !without_github.contains(&op.path.as_str())
    });
    let mut walked = 0;
    for operation in sign_in {
        let request = Bad {
            content_type: Some("application/json"),
            ..everything_wrong(&operation)
        };
        let status = StatusCode::NOT_FOUND;
        expect(&server, &operation, request, status, "sign_in_disabled").await;
        walked += 1;
    }
    assert_eq!(walked, 4, "login, callback, device, device token");
    server.stop().await;
}

const GITHUB_WEBHOOK: &str = "/v1/github/webhook";

/// Where the GitHub App is not configured, its webhook is not there, whatever is sent to it.
async fn the_github_webhook_is_not_there_where_the_app_is_off(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let webhook = operations()
        .into_iter()
        .find(|op| op.path == GITHUB_WEBHOOK)
        .expect("the document lists the webhook");
    for body in [&b"{\"not json"[..], b"", b"[]", b"{}"] {
        let request = Bad {
            content_type: Some("application/json"),
            body: Some(body.to_vec()),
            ..Bad::default()
        };
        let status = StatusCode::NOT_FOUND;
        expect(&server, &webhook, request, status, "github_disabled").await;
    }
    server.stop().await;
}

/// Where no VAPID key is configured, the push routes say so to a signed-in caller, whatever
/// is sent to them.
async fn push_is_not_there_where_it_is_off(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let push = operations()
        .into_iter()
        .filter(|op| op.path.starts_with("/v1/push/"));
    let mut walked = 0;
    for operation in push {
        let request = Bad {
            content_type: Some("application/json"),
            authorization: Some(bearer(&alice)),
            ..everything_wrong(&operation)
        };
        let status = StatusCode::NOT_FOUND;
        expect(&server, &operation, request, status, "push_disabled").await;
        walked += 1;
    }
    assert_eq!(walked, 4, "the key, and subscribe, list and unsubscribe");
    server.stop().await;
}

async fn streams_check_credentials_before_anything_else(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let http = reqwest::Client::new();
    let base = &server.base_url;
    let streams = [
        format!("{base}/v1/tasks/not-an-id/stream?after=-1&after=x"),
        format!("{base}/v1/tasks/{UNKNOWN_ID}/stream?after=x"),
        format!("{base}/v1/stream?after=not-a-cursor"),
    ];
    for url in &streams {
        for authorization in [None, Some("Bearer berth_not-a-real-token")] {
            let mut request = http.get(url);
            if let Some(authorization) = authorization {
                request = request.header(AUTHORIZATION, authorization);
            }
            let response = request.send().await.unwrap();
            let status = StatusCode::UNAUTHORIZED;
            assert_json_error(response, status, "unauthorized", url).await;
        }
        let ticket = format!("{url}&ticket=bst_not-a-real-ticket");
        let response = http.get(&ticket).send().await.unwrap();
        assert_json_error(response, StatusCode::UNAUTHORIZED, "unauthorized", &ticket).await;
    }
    // With the right, the caller learns what else is wrong.
    let answers = [
        (StatusCode::NOT_FOUND, "not_found"),
        (StatusCode::BAD_REQUEST, "invalid_after"),
        (StatusCode::BAD_REQUEST, "invalid_cursor"),
    ];
    for (url, (status, code)) in streams.iter().zip(answers) {
        let response = http
            .get(url)
            .header(AUTHORIZATION, bearer(&alice))
            .send()
            .await
            .unwrap();
        assert_json_error(response, status, code, url).await;
    }
    server.stop().await;
}

async fn a_body_without_a_length_is_cut_off_at_the_limit(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let fake = FakeGitHubOAuth::start().await;
    let db = walking_database(&backend, &fake).await;
    let server = TestServer::start(&db).await;
    let alice = server.user("alice").await;
    let address = server.base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let chunk = vec![b' '; MAX_BODY + 1];
    let request = format!(
        "POST /v1/tokens HTTP/1.1\r\nHost: {address}\r\n{AUTHORIZATION}: {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n{:x}\r\n",
        bearer(&alice),
        chunk.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(&chunk).await.unwrap();
    stream.write_all(b"\r\n0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"code\":\"body_too_large\""), "{answer}");
    assert_eq!(
        alice.list_tokens().await.unwrap().len(),
        1,
        "no token was made"
    );
    server.stop().await;
}
