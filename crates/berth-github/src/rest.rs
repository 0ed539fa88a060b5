//! GitHub's REST API with a token: one request shape (the headers GitHub asks for, JSON in and
//! out), retried a few times when GitHub or the way to it fails, and errors that say what
//! GitHub answered. Everything Berth asks of GitHub goes through [`Rest::call`].

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::{GitHubError, Result, API_VERSION, USER_AGENT};

/// The REST API of one GitHub (or GitHub Enterprise, or the tests' fake).
#[derive(Clone, Debug)]
pub struct Rest {
    http: reqwest::Client,
    api_url: String,
}

/// How often a call is tried when GitHub answers 5xx or cannot be reached.
const TRIES: u32 = 3;

impl Rest {
    /// `api_url` is such as `https://api.github.com` or `https://ghe.example.com/api/v3`.
    pub fn new(api_url: &str) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(Duration::from_secs(30))
            // GitHub's API does not redirect a request that matters; a redirect could take
            // the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client builds");
        Self {
            http,
            api_url: api_url.trim_end_matches('/').to_string(),
        }
    }

    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// Sends `method path` with `authorization` (`Bearer …`) and `body`; the status and the
    /// JSON answer (`null` when there is none) of a 2xx, else the error.
    pub async fn call(
        &self,
        authorization: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.api_url);
        let mut tried = 0;
        loop {
            tried += 1;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header("authorization", authorization)
                .header("accept", "application/vnd.github+json")
                .header("x-github-api-version", API_VERSION);
            if let Some(body) = body {
                request = request.json(body);
            }
            let failure = match request.send().await {
                Ok(response) if response.status().is_server_error() => {
                    GitHubError::new(Some(response.status().as_u16()), "GitHub is having trouble")
                }
                Ok(response) => return answer(response).await,
                Err(err) => GitHubError::new(None, err.without_url().to_string()),
            };
            if tried >= TRIES {
                return Err(failure);
            }
            tokio::time::sleep(Duration::from_millis(500 * u64::from(tried))).await;
        }
    }
}

async fn answer(response: reqwest::Response) -> Result<(u16, Value)> {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        return Ok((status, json));
    }
    let message = json["message"].as_str().unwrap_or("no message").to_string();
    Err(GitHubError {
        status: Some(status),
        message,
    })
}
