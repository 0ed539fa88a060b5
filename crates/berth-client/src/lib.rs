//! A typed client for Berth's public HTTP API, used by the `berth` command line and by the
//! integration tests, so that both exercise exactly what any other client would.

pub mod device;
mod environments;
mod stream;

pub use stream::{Followed, StreamEnd, TaskStream};

use berth_proto::{
    CreateTask, CreateToken, CreatedToken, ErrorBody, EventPage, Me, Task, TaskId, TaskPage,
    TaskStatus, TokenId, TokenInfo, TokenList,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an API error.
    #[error("{message} ({status}, {code})")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
    /// No connection could be made to the server (it is down, restarting, or the address
    /// is wrong).
    #[error("cannot reach the Berth server at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    /// The connection failed midway or the answer could not be read.
    #[error("request failed: {}", with_cause(.0))]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    ServerAddress(String),
    #[error("invalid URL: {0}")]
    Url(#[from] url::ParseError),
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Http(err) => err.status(),
            _ => None,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the request may have been acted on with its answer lost on the way, or not
    /// reached the server at all: worth sending again when that is safe.
    fn may_be_lost(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Http(err) => !err.is_builder() && !err.is_redirect() && !err.is_status(),
            ClientError::Api { status, .. } => matches!(
                *status,
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            ),
            ClientError::ServerAddress(_) | ClientError::Url(_) => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// How often a request with an idempotency key is sent at most, and the first wait between
/// two tries (doubled each time).
const SEND_TRIES: u32 = 4;
const RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(250);

/// A follow-up the server queued.
#[derive(Clone, Debug)]
pub struct FollowUpQueued {
    /// The task as it is now.
    pub task: Task,
    /// Whether this call queued it (`false` when its idempotency key had been used before).
    pub created: bool,
    /// The sequence number of the follow-up's first event: follow from `first_seq - 1` to see
    /// all of it. `None` from a server that does not say.
    pub first_seq: Option<i64>,
}

/// Filters and position for [`Client::list_tasks`].
#[derive(Clone, Debug, Default)]
pub struct ListTasks {
    pub status: Option<TaskStatus>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: url::Url,
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the server at `base_url` (such as `http://127.0.0.1:7700`).
    pub fn new(base_url: &str, token: Option<String>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("berth-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            base: server_address(base_url)?,
            token,
        })
    }

    /// The same server with another token.
    pub fn with_token(&self, token: impl Into<String>) -> Self {
        Self {
            token: Some(token.into()),
            ..self.clone()
        }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn base_url(&self) -> &url::Url {
        &self.base
    }

    /// A request to `path` with the token attached, for calls this client does not wrap.
    pub fn request(&self, method: Method, path: &str) -> Result<RequestBuilder> {
        let mut request = self.http.request(method, self.base.join(path)?);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        Ok(request)
    }

    /// Creates a task; returns it and whether this call created it (`false` when the
    /// idempotency key had been used before). With a key, an answer lost to the network is
    /// asked for again with the same key, which cannot make a second task.
    pub async fn create_task(
        &self,
        task: &CreateTask,
        idempotency_key: Option<&str>,
    ) -> Result<(Task, bool)> {
        let (task, status, _) = self
            .send_idempotent(idempotency_key, || {
                Ok(self.request(Method::POST, "/v1/tasks")?.json(task))
            })
            .await?;
        Ok((task, status == StatusCode::CREATED))
    }

    pub async fn list_tasks(&self, query: &ListTasks) -> Result<TaskPage> {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(status) = query.status {
            params.push(("status", status.as_str().to_string()));
        }
        if let Some(cursor) = &query.cursor {
            params.push(("cursor", cursor.clone()));
        }
        if let Some(limit) = query.limit {
            params.push(("limit", limit.to_string()));
        }
        self.send_json(self.request(Method::GET, "/v1/tasks")?.query(&params))
            .await
    }

    pub async fn get_task(&self, id: TaskId) -> Result<Task> {
        self.send_json(self.request(Method::GET, &format!("/v1/tasks/{id}"))?)
            .await
    }

    pub async fn cancel_task(&self, id: TaskId) -> Result<Task> {
        self.send_json(self.request(Method::POST, &format!("/v1/tasks/{id}/cancel"))?)
            .await
    }

    pub async fn list_events(
        &self,
        id: TaskId,
        after: i64,
        limit: Option<u32>,
    ) -> Result<EventPage> {
        let mut request = self
            .request(Method::GET, &format!("/v1/tasks/{id}/events"))?
            .query(&[("after", after)]);
        if let Some(limit) = limit {
            request = request.query(&[("limit", limit)]);
        }
        self.send_json(request).await
    }

    /// Queues a follow-up on a task that has ended. Retried like [`Client::create_task`]: a
    /// retry's answer still says where the follow-up's events begin.
    pub async fn follow_up(
        &self,
        id: TaskId,
        prompt: &str,
        idempotency_key: Option<&str>,
    ) -> Result<FollowUpQueued> {
        let body = berth_proto::FollowUp {
            prompt: prompt.to_string(),
        };
        let path = format!("/v1/tasks/{id}/messages");
        let (task, status, headers) = self
            .send_idempotent(idempotency_key, || {
                Ok(self.request(Method::POST, &path)?.json(&body))
            })
            .await?;
        let first_seq = headers
            .get("berth-follow-up-seq")
            .and_then(|value| value.to_str().ok()?.parse().ok());
        Ok(FollowUpQueued {
            task,
            created: status == StatusCode::ACCEPTED,
            first_seq,
        })
    }

    /// The task's diff as bytes (it may hold binary patches).
    pub async fn get_diff(&self, id: TaskId) -> Result<Vec<u8>> {
        let request = self.request(Method::GET, &format!("/v1/tasks/{id}/diff"))?;
        let response = checked(self.send(request).await?).await?;
        Ok(response.bytes().await?.to_vec())
    }

    /// The task's pull request as it stands on GitHub, with its checks.
    pub async fn pull_request(&self, id: TaskId) -> Result<berth_proto::PullRequestView> {
        let path = format!("/v1/tasks/{id}/pull_request");
        self.send_json(self.request(Method::GET, &path)?).await
    }

    /// Merges the task's pull request if its head is still `merge.sha`.
    pub async fn merge_pull_request(
        &self,
        id: TaskId,
        merge: &berth_proto::MergePullRequest,
    ) -> Result<berth_proto::PullRequestView> {
        let path = format!("/v1/tasks/{id}/pull_request/merge");
        self.send_json(self.request(Method::POST, &path)?.json(merge))
            .await
    }

    pub async fn me(&self) -> Result<Me> {
        self.send_json(self.request(Method::GET, "/v1/me")?).await
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        let list: TokenList = self
            .send_json(self.request(Method::GET, "/v1/tokens")?)
            .await?;
        Ok(list.tokens)
    }

    pub async fn create_token(&self, name: &str) -> Result<CreatedToken> {
        let body = CreateToken {
            name: name.to_string(),
        };
        self.send_json(self.request(Method::POST, "/v1/tokens")?.json(&body))
            .await
    }

    pub async fn revoke_token(&self, id: TokenId) -> Result<TokenInfo> {
        self.send_json(self.request(Method::DELETE, &format!("/v1/tokens/{id}"))?)
            .await
    }

    /// `GET /healthz` and `GET /readyz` succeed.
    pub async fn ready(&self) -> Result<()> {
        for path in ["/healthz", "/readyz"] {
            checked(self.send(self.http.get(self.base.join(path)?)).await?).await?;
        }
        Ok(())
    }

    /// Sends a request that creates something. With an idempotency key it is sent again,
    /// with the same key, after a failure that may have lost the answer (the connection
    /// dropped, a gateway error), so that a flaky network neither loses nor doubles it.
    async fn send_idempotent<T: DeserializeOwned>(
        &self,
        key: Option<&str>,
        build: impl Fn() -> Result<RequestBuilder>,
    ) -> Result<(T, StatusCode, reqwest::header::HeaderMap)> {
        let mut delay = RETRY_DELAY;
        let mut tries = 1;
        loop {
            let mut request = build()?;
            if let Some(key) = key {
                request = request.header("Idempotency-Key", key);
            }
            let answer: Result<(T, StatusCode, reqwest::header::HeaderMap)> = async {
                let response = checked(self.send(request).await?).await?;
                let (status, headers) = (response.status(), response.headers().clone());
                Ok((response.json().await?, status, headers))
            }
            .await;
            match answer {
                Err(err) if key.is_some() && tries < SEND_TRIES && err.may_be_lost() => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    tries += 1;
                }
                answer => return answer,
            }
        }
    }

    async fn send_json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T> {
        let response = checked(self.send(request).await?).await?;
        Ok(response.json().await?)
    }

    /// Sends the request; a connection that could not be made is told apart from one that
    /// failed midway, so that a person reads "cannot reach the server" and its cause.
    async fn send(&self, request: RequestBuilder) -> Result<Response> {
        request.send().await.map_err(|err| match err.is_connect() {
            true => ClientError::Unreachable {
                server: self.base.as_str().trim_end_matches('/').to_string(),
                reason: root_cause(&err),
            },
            false => ClientError::Http(err),
        })
    }
}

/// The server's base URL, refused with a hint when it is not an `http(s)://` address.
fn server_address(text: &str) -> Result<url::Url> {
    let text = text.trim();
    let hint = || {
        ClientError::ServerAddress(format!(
            "the server address {text:?} must start with http:// or https:// \
             (such as http://{})",
            text.split("://").last().unwrap_or(text)
        ))
    };
    match url::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
        Ok(_) | Err(url::ParseError::RelativeUrlWithoutBase) => Err(hint()),
        Err(err) => Err(ClientError::ServerAddress(format!(
            "the server address {text:?} is not a URL: {err}"
        ))),
    }
}

/// The innermost cause of an error, which is the part a person can act on ("Connection
/// refused" rather than three layers of "error sending request").
pub(crate) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// An error and, when it is not the same, its innermost cause.
fn with_cause(err: &reqwest::Error) -> String {
    let cause = root_cause(err);
    match err.to_string() {
        text if text == cause => text,
        text => format!("{text}: {cause}"),
    }
}

/// The message of an API error body, if the bytes are one.
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|body| body.error.message)
}

/// Turns an error answer into [`ClientError::Api`], reading the API's error body.
pub async fn checked(response: Response) -> Result<Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    Err(match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => ClientError::Api {
            status,
            code: body.error.code,
            message: body.error.message,
        },
        Err(_) => ClientError::Api {
            status,
            code: "unexpected_response".to_string(),
            message: text.chars().take(500).collect(),
        },
    })
}
