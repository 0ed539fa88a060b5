//! A client of the parts of Fly's published Machines REST API (`https://api.machines.dev/v1`)
//! that a sandbox needs: create, wait, exec, stop, destroy and list. Only the documented
//! request and response fields are used; docs/fly.md lists them.

use std::collections::HashMap;
use std::time::Duration;

use berth_proto::Secret;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Fly's documented limit on one wait: between one second and a minute.
const MAX_WAIT_SECS: u64 = 60;
/// Tries of one call that Fly's rate limit (429) turned away.
const RATE_LIMITED_TRIES: u32 = 8;

/// A machine's size: Fly's `guest`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Guest {
    /// `shared` or `performance`.
    pub cpu_kind: String,
    pub cpus: u32,
    pub memory_mb: u64,
}

/// What the machine runs at boot instead of the image's own command: Fly's `init`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Init {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
}

/// Fly's `restart` policy: `no` for a sandbox, which must not come back after it stops.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Restart {
    pub policy: String,
}

/// The part of Fly's machine `config` Berth sets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineConfig {
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<Guest>,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    /// Fly destroys the machine once it stops, so a crashed runner's machine does not linger
    /// stopped (and stored) forever.
    #[serde(default)]
    pub auto_destroy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<Init>,
}

/// The body of `POST /apps/{app}/machines`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateMachine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub config: MachineConfig,
}

/// A machine as Fly describes it (the fields Berth reads).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// `created`, `starting`, `started`, `stopping`, `stopped`, `destroying`, `destroyed`…
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub config: Option<MachineConfig>,
}

impl Machine {
    /// The machine's metadata (none when Fly left its config out).
    pub fn metadata(&self) -> HashMap<String, String> {
        self.config
            .as_ref()
            .map(|config| config.metadata.clone())
            .unwrap_or_default()
    }
}

/// The body of `POST /apps/{app}/machines/{id}/exec`: `command` is an argv (Fly's older `cmd`
/// string is deprecated), `stdin` a whole string, `timeout` seconds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecCommand {
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    pub timeout: u64,
}

/// Fly's `flydv1.ExecResponse`: the whole output once the command has ended.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExecOutput {
    #[serde(default)]
    pub exit_code: Option<i64>,
    #[serde(default)]
    pub exit_signal: Option<i64>,
    #[serde(default)]
    pub stdout: Option<String>,
    #[serde(default)]
    pub stderr: Option<String>,
}

#[derive(Debug)]
pub enum ApiError {
    /// The API answered with an error status.
    Status { status: StatusCode, message: String },
    /// The API could not be reached, or its answer not read.
    Transport(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Status { status, message } if status.as_u16() == 401 => write!(
                f,
                "the Fly Machines API refused the token (401): check fly_api_token ({message})"
            ),
            ApiError::Status { status, message } => {
                write!(f, "the Fly Machines API answered {status}: {message}")
            }
            ApiError::Transport(err) => write!(f, "the Fly Machines API cannot be reached: {err}"),
        }
    }
}

impl ApiError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Status { status, .. } if *status == StatusCode::NOT_FOUND)
    }
}

/// The Machines API of one Fly app, with a token allowed to manage its machines.
#[derive(Clone)]
pub struct MachinesClient {
    http: reqwest::Client,
    base: String,
    app: String,
    token: Secret,
}

/// Never shows the token.
impl std::fmt::Debug for MachinesClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachinesClient")
            .field("base", &self.base)
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

impl MachinesClient {
    /// `base` is the API's root, such as `https://api.machines.dev/v1`.
    pub fn new(base: &str, app: &str, token: Secret) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("the HTTP client builds");
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            app: app.to_string(),
            token,
        }
    }

    pub fn app(&self) -> &str {
        &self.app
    }

    /// Creates (and starts) a machine.
    pub async fn create(&self, request: &CreateMachine) -> Result<Machine, ApiError> {
        let path = format!("/apps/{}/machines", self.app);
        self.call(
            Method::POST,
            &path,
            &[],
            Some(request),
            Duration::from_secs(60),
        )
        .await
    }

    /// The app's machines, with their metadata.
    pub async fn list(&self) -> Result<Vec<Machine>, ApiError> {
        let path = format!("/apps/{}/machines", self.app);
        self.call(
            Method::GET,
            &path,
            &[],
            None::<&()>,
            Duration::from_secs(60),
        )
        .await
    }

    /// Waits until the machine is `started`, a minute at most per call as Fly allows, for at
    /// most `within`.
    pub async fn wait_started(&self, id: &str, within: Duration) -> Result<(), ApiError> {
        let path = format!("/apps/{}/machines/{id}/wait", self.app);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let secs = left.as_secs().clamp(1, MAX_WAIT_SECS).to_string();
            let query = [("state", "started"), ("timeout", secs.as_str())];
            let waited: Result<serde_json::Value, _> = self
                .call(
                    Method::GET,
                    &path,
                    &query,
                    None::<&()>,
                    left + Duration::from_secs(30),
                )
                .await;
            match waited {
                Ok(_) => return Ok(()),
                // Fly answers 408 when the wait ran out before the state came.
                Err(ApiError::Status { status, .. })
                    if status == StatusCode::REQUEST_TIMEOUT
                        && tokio::time::Instant::now() < deadline => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// Runs a command to its end and returns all its output.
    pub async fn exec(&self, id: &str, command: &ExecCommand) -> Result<ExecOutput, ApiError> {
        let path = format!("/apps/{}/machines/{id}/exec", self.app);
        // Fly's own timeout ends the command; the request waits a little longer for its answer.
        let wait = Duration::from_secs(command.timeout + 30);
        self.call(Method::POST, &path, &[], Some(command), wait)
            .await
    }

    /// Stops the machine (with `auto_destroy`, Fly then destroys it).
    pub async fn stop(&self, id: &str) -> Result<(), ApiError> {
        let path = format!("/apps/{}/machines/{id}/stop", self.app);
        let _: serde_json::Value = self
            .call(
                Method::POST,
                &path,
                &[],
                None::<&()>,
                Duration::from_secs(60),
            )
            .await?;
        Ok(())
    }

    /// Destroys the machine, running or not.
    pub async fn destroy(&self, id: &str) -> Result<(), ApiError> {
        let path = format!("/apps/{}/machines/{id}", self.app);
        let query = [("force", "true")];
        let _: serde_json::Value = self
            .call(
                Method::DELETE,
                &path,
                &query,
                None::<&()>,
                Duration::from_secs(60),
            )
            .await?;
        Ok(())
    }

    /// One call, tried again while Fly's rate limit turns it away (which it does at a few
    /// calls per second per machine and action).
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Duration,
    ) -> Result<T, ApiError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .query(query)
                .bearer_auth(self.token.expose())
                .timeout(timeout);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .map_err(|err| ApiError::Transport(err.without_url().to_string()))?;
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS && tries < RATE_LIMITED_TRIES {
                let wait =
                    retry_after(&response).unwrap_or(Duration::from_millis(500 * tries as u64));
                tokio::time::sleep(wait).await;
                continue;
            }
            let text = response
                .text()
                .await
                .map_err(|err| ApiError::Transport(err.without_url().to_string()))?;
            if !status.is_success() {
                return Err(ApiError::Status {
                    status,
                    message: error_message(&text),
                });
            }
            // Some calls answer with no body at all.
            let text = if text.trim().is_empty() {
                "null"
            } else {
                &text
            };
            return serde_json::from_str(text).map_err(|err| {
                ApiError::Transport(format!("unexpected answer to {method} {path}: {err}"))
            });
        }
    }
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    let secs: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(30)))
}

/// Fly's `{"error": "…"}`, else the body itself, cut short.
fn error_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
    }
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(parsed) => parsed.error,
        Err(_) => body.chars().take(300).collect(),
    }
}
