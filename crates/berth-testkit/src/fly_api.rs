//! A fake of Fly's published Machines REST API on loopback, with machines as containers on the
//! local Docker engine: create runs the image, exec is `docker exec` (as root, as Fly's is),
//! metadata are labels, destroy removes the container. Only the documented calls and fields
//! are answered, with Fly's bearer-token check and its one-minute bound on waits, so the
//! production client is what talks to it. Its containers are removed when it is dropped.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

const LABEL_APP: &str = "fly-fake.app";
const LABEL_METADATA: &str = "fly-fake.metadata.";
const LABEL_AUTO_DESTROY: &str = "fly-fake.auto-destroy";

struct Inner {
    app: String,
    token: String,
    /// `METHOD path` of every request that passed the token check.
    requests: Mutex<Vec<String>>,
}

pub struct FakeFlyApi {
    /// The API's root, like `https://api.machines.dev/v1`.
    pub url: String,
    pub app: String,
    pub token: String,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeFlyApi {
    fn drop(&mut self) {
        self.server.abort();
        for id in crate::docker::containers_labelled(&format!("{LABEL_APP}={}", self.app)) {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", &id])
                .output();
        }
    }
}

impl FakeFlyApi {
    /// A fake with one app, of a fresh name, and one token allowed to manage it.
    pub async fn start() -> Self {
        let app = format!("berth-test-{:012x}", rand::random::<u64>() >> 16);
        let token = format!("fo1_{:032x}", rand::random::<u128>());
        let inner = Arc::new(Inner {
            app: app.clone(),
            token: token.clone(),
            requests: Mutex::default(),
        });
        let router = Router::new()
            .route("/v1/apps/{app}/machines", post(create).get(list))
            .route("/v1/apps/{app}/machines/{id}", get(show).delete(destroy))
            .route("/v1/apps/{app}/machines/{id}/wait", get(wait))
            .route("/v1/apps/{app}/machines/{id}/exec", post(exec))
            .route("/v1/apps/{app}/machines/{id}/stop", post(stop))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            url,
            app,
            token,
            inner,
            server,
        }
    }

    /// `METHOD path` of each request that carried the token, in order.
    pub fn requests(&self) -> Vec<String> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// Ids of the app's machines that still exist (their containers' names).
    pub fn machines(&self) -> Vec<String> {
        let filter = format!("label={LABEL_APP}={}", self.app);
        let output = std::process::Command::new("docker")
            .args(["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"])
            .output()
            .expect("the docker command runs");
        assert!(output.status.success(), "docker ps failed: {output:?}");
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }
}

type Shared = Arc<Inner>;

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Fly's token check and app lookup, before anything else: the answer when it is refused.
fn refused(inner: &Inner, headers: &HeaderMap, app: &str, what: String) -> Option<Response> {
    let expected = format!("Bearer {}", inner.token);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return Some(error(StatusCode::UNAUTHORIZED, "unauthorized"));
    }
    if app != inner.app {
        return Some(error(StatusCode::NOT_FOUND, "app not found"));
    }
    inner.requests.lock().unwrap().push(what);
    None
}

async fn docker(args: &[String]) -> Result<String, String> {
    let output = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .map_err(|err| err.to_string())?;
    match output.status.success() {
        true => Ok(String::from_utf8_lossy(&output.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&output.stderr).trim().to_string()),
    }
}

/// The container as Fly describes a machine, or `None` when it is not one of the app's.
async fn describe(inner: &Inner, id: &str) -> Option<Value> {
    let inspected = docker(&["inspect".into(), id.into()]).await.ok()?;
    let inspected: Vec<Value> = serde_json::from_str(&inspected).ok()?;
    let container = inspected.first()?;
    let labels = container["Config"]["Labels"].as_object()?;
    if labels.get(LABEL_APP).and_then(Value::as_str) != Some(inner.app.as_str()) {
        return None;
    }
    let metadata: HashMap<&str, &Value> = labels
        .iter()
        .filter_map(|(key, value)| Some((key.strip_prefix(LABEL_METADATA)?, value)))
        .collect();
    let state = match container["State"]["Running"].as_bool() {
        Some(true) => "started",
        _ => "stopped",
    };
    Some(json!({
        "id": id,
        "name": container["Name"].as_str().unwrap_or_default().trim_start_matches('/'),
        "state": state,
        "config": {
            "image": container["Config"]["Image"],
            "metadata": metadata,
            "auto_destroy": labels.contains_key(LABEL_AUTO_DESTROY),
        },
    }))
}

async fn create(
    State(inner): State<Shared>,
    Path(app): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refused) = refused(&inner, &headers, &app, "POST /machines".into()) {
        return refused;
    }
    let config = &body["config"];
    let Some(image) = config["image"].as_str() else {
        return error(StatusCode::BAD_REQUEST, "config.image is required");
    };
    // Fly's machine ids are 14 hex digits.
    let id = format!("{:014x}", rand::random::<u64>() >> 8);
    let args = run_args(&inner.app, &id, config, image);
    if let Err(err) = docker(&args).await {
        let _ = docker(&["rm".into(), "-f".into(), id.clone()]).await;
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("could not create machine: {err}"),
        );
    }
    match describe(&inner, &id).await {
        Some(machine) => Json(machine).into_response(),
        None => error(StatusCode::INTERNAL_SERVER_ERROR, "the machine vanished"),
    }
}

/// `docker run`'s arguments for a machine of `app` with Fly's `config`.
fn run_args(app: &str, id: &str, config: &Value, image: &str) -> Vec<String> {
    let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), id.into()];
    let mut label = |key: &str, value: &str| {
        args.extend(["--label".to_string(), format!("{key}={value}")]);
    };
    label(LABEL_APP, app);
    if config["auto_destroy"].as_bool() == Some(true) {
        label(LABEL_AUTO_DESTROY, "true");
    }
    for (key, value) in config["metadata"].as_object().into_iter().flatten() {
        label(
            &format!("{LABEL_METADATA}{key}"),
            value.as_str().unwrap_or_default(),
        );
    }
    let guest = &config["guest"];
    if let Some(mb) = guest["memory_mb"].as_u64() {
        args.extend([format!("--memory={mb}m"), format!("--memory-swap={mb}m")]);
    }
    if let Some(cpus) = guest["cpus"].as_u64() {
        args.push(format!("--cpus={cpus}"));
    }
    // Fly's own init is a machine's PID 1 and reaps orphans; tini does that here.
    args.push("--init".into());
    // Not Fly's: a machine is a VM there, here a container on a shared host, which a fork
    // bomb in a test must not take down.
    args.push("--pids-limit=4096".into());
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let mut entrypoint = strings(&config["init"]["entrypoint"]);
    let mut command = strings(&config["init"]["cmd"]);
    if !entrypoint.is_empty() {
        args.extend(["--entrypoint".to_string(), entrypoint.remove(0)]);
        entrypoint.append(&mut command);
        command = entrypoint;
    }
    args.push(image.to_string());
    args.extend(command);
    args
}

async fn list(
    State(inner): State<Shared>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refused(&inner, &headers, &app, "GET /machines".into()) {
        return refused;
    }
    let filter = format!("label={LABEL_APP}={}", inner.app);
    let ids = match docker(&[
        "ps".into(),
        "-aq".into(),
        "--no-trunc".into(),
        "--filter".into(),
        filter,
    ])
    .await
    {
        Ok(ids) => ids,
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, &err),
    };
    let mut machines = Vec::new();
    for long_id in ids.split_whitespace() {
        // Machines are known by their name, which is their Fly id.
        let name = docker(&[
            "inspect".into(),
            "--format".into(),
            "{{.Name}}".into(),
            long_id.into(),
        ])
        .await
        .unwrap_or_default();
        if let Some(machine) = describe(&inner, name.trim().trim_start_matches('/')).await {
            machines.push(machine);
        }
    }
    Json(machines).into_response()
}

async fn show(
    State(inner): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refused(&inner, &headers, &app, "GET /machines/{id}".into()) {
        return refused;
    }
    match describe(&inner, &id).await {
        Some(machine) => Json(machine).into_response(),
        None => error(StatusCode::NOT_FOUND, "machine not found"),
    }
}

#[derive(Deserialize)]
struct WaitQuery {
    state: Option<String>,
    timeout: Option<u64>,
}

async fn wait(
    State(inner): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<WaitQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refused(&inner, &headers, &app, "GET /machines/{id}/wait".into()) {
        return refused;
    }
    let timeout = query.timeout.unwrap_or(60);
    if !(1..=60).contains(&timeout) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_argument: timeout must be in [1s, 1m0s]",
        );
    }
    let wanted = query.state.unwrap_or_else(|| "started".into());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        let Some(machine) = describe(&inner, &id).await else {
            return error(StatusCode::NOT_FOUND, "machine not found");
        };
        if machine["state"] == wanted.as_str() {
            return Json(json!({ "ok": true })).into_response();
        }
        if tokio::time::Instant::now() >= deadline {
            return error(StatusCode::REQUEST_TIMEOUT, "deadline_exceeded");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(Deserialize)]
struct ExecBody {
    command: Vec<String>,
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default)]
    timeout: Option<u64>,
}

async fn exec(
    State(inner): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<ExecBody>,
) -> Response {
    if let Some(refused) = refused(&inner, &headers, &app, "POST /machines/{id}/exec".into()) {
        return refused;
    }
    if describe(&inner, &id).await.is_none() {
        return error(StatusCode::NOT_FOUND, "machine not found");
    }
    if body.command.is_empty() {
        return error(StatusCode::BAD_REQUEST, "command is required");
    }
    let mut child = match tokio::process::Command::new("docker")
        .args(["exec", "-i", "-u", "0", &id])
        .args(&body.command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    };
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = body.stdin.unwrap_or_default();
    let writing = tokio::spawn(async move {
        let _ = stdin.write_all(input.as_bytes()).await;
    });
    let limit = Duration::from_secs(body.timeout.unwrap_or(60).max(1));
    let output = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => return error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
        Err(_) => return error(StatusCode::REQUEST_TIMEOUT, "deadline_exceeded"),
    };
    let _ = writing.await;
    // Fly's answer leaves out every field that is zero or empty (Go's `omitempty`).
    let mut answer = serde_json::Map::new();
    match output.status.code() {
        Some(0) => {}
        Some(code) => {
            answer.insert("exit_code".into(), code.into());
        }
        None => {
            let signal = std::os::unix::process::ExitStatusExt::signal(&output.status);
            answer.insert("exit_signal".into(), signal.unwrap_or(9).into());
        }
    }
    for (name, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        if !bytes.is_empty() {
            answer.insert(name.into(), String::from_utf8_lossy(bytes).into());
        }
    }
    Json(Value::Object(answer)).into_response()
}

async fn stop(
    State(inner): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refused(&inner, &headers, &app, "POST /machines/{id}/stop".into()) {
        return refused;
    }
    let Some(machine) = describe(&inner, &id).await else {
        return error(StatusCode::NOT_FOUND, "machine not found");
    };
    let _ = docker(&["stop".into(), "-t".into(), "5".into(), id.clone()]).await;
    if machine["config"]["auto_destroy"] == true {
        let _ = docker(&["rm".into(), "-f".into(), id]).await;
    }
    Json(json!({ "ok": true })).into_response()
}

#[derive(Deserialize)]
struct DestroyQuery {
    force: Option<bool>,
}

async fn destroy(
    State(inner): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<DestroyQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refused(&inner, &headers, &app, "DELETE /machines/{id}".into()) {
        return refused;
    }
    let Some(machine) = describe(&inner, &id).await else {
        return error(StatusCode::NOT_FOUND, "machine not found");
    };
    if machine["state"] == "started" && query.force != Some(true) {
        return error(
            StatusCode::PRECONDITION_FAILED,
            "failed_precondition: machine still active, refusing to delete",
        );
    }
    match docker(&["rm".into(), "-f".into(), id]).await {
        Ok(_) => Json(json!({ "ok": true })).into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err),
    }
}
