//! The calls Berth makes to GitHub (or GitHub Enterprise, or the tests' fake): exchanging a
//! code or device code for a token, asking who the token belongs to, and which repositories
//! it reaches.

use serde::Deserialize;

use berth_store::GithubIdentity;

use crate::{Settings, Shared};

pub struct GitHub {
    http: reqwest::Client,
    web: String,
    api: String,
    client_id: String,
    client_secret: Option<String>,
}

/// What GitHub's token endpoint answered.
#[derive(Debug, Deserialize)]
pub struct TokenAnswer {
    pub access_token: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub interval: Option<u64>,
}

/// What to show the person, and the code to poll with.
#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
pub struct DeviceCode {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub expires_in: u64,
    pub interval: u64,
}

#[derive(Deserialize)]
struct GithubUser {
    id: i64,
    login: String,
}

/// One repository the signed-in user may reach on GitHub, as the new-task form offers it.
#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
pub struct GithubRepository {
    /// `owner/name`.
    pub full_name: String,
    /// The URL to clone it with, which a task's `repo_url` takes.
    pub clone_url: String,
    pub private: bool,
}

#[derive(Deserialize)]
struct GithubOrg {
    login: String,
}

pub const SCOPES: &str = "read:user read:org repo";

impl GitHub {
    /// The client of the configured OAuth app; `None` when sign-in is off.
    pub fn new(settings: &Settings, shared: &Shared) -> Option<Self> {
        let client_id = settings.github_client_id.clone()?;
        Some(Self {
            http: reqwest::Client::builder()
                .user_agent("berth")
                .timeout(std::time::Duration::from_secs(20))
                .build()
                .ok()?,
            web: shared.github_web_url.trim_end_matches('/').to_string(),
            api: shared.github_api_url.trim_end_matches('/').to_string(),
            client_id,
            client_secret: settings
                .github_client_secret
                .as_ref()
                .map(|s| s.expose().to_string()),
        })
    }

    pub fn authorize_url(&self, redirect_uri: &str, state: &str, challenge: &str) -> String {
        let mut url = url::Url::parse(&format!("{}/login/oauth/authorize", self.web))
            .expect("github_web_url is validated");
        url.query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", SCOPES)
            .append_pair("state", state)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        url.into()
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> anyhow::Result<TokenAnswer> {
        let answer = self
            .http
            .post(format!("{}/login/oauth/access_token", self.web))
            .header("Accept", "application/json")
            .form(form)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(answer)
    }

    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> anyhow::Result<TokenAnswer> {
        let secret = self.client_secret.as_deref().unwrap_or_default();
        self.token_request(&[
            ("client_id", &self.client_id),
            ("client_secret", secret),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ])
        .await
    }

    pub async fn start_device(&self) -> anyhow::Result<DeviceCode> {
        Ok(self
            .http
            .post(format!("{}/login/device/code", self.web))
            .header("Accept", "application/json")
            .form(&[("client_id", self.client_id.as_str()), ("scope", SCOPES)])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    pub async fn poll_device(&self, device_code: &str) -> anyhow::Result<TokenAnswer> {
        self.token_request(&[
            ("client_id", &self.client_id),
            ("device_code", device_code),
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ])
        .await
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
    ) -> anyhow::Result<T> {
        Ok(self
            .http
            .get(format!("{}{path}", self.api))
            .bearer_auth(token)
            .header("Accept", "application/vnd.github+json")
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    pub async fn identity(&self, token: &str) -> anyhow::Result<GithubIdentity> {
        let user: GithubUser = self.get(token, "/user").await?;
        Ok(GithubIdentity {
            github_id: user.id,
            login: user.login,
        })
    }

    pub async fn org_logins(&self, token: &str) -> anyhow::Result<Vec<String>> {
        let orgs: Vec<GithubOrg> = self.get(token, "/user/orgs?per_page=100").await?;
        Ok(orgs.into_iter().map(|org| org.login).collect())
    }

    /// The token's repositories, most recently pushed first (one page of 100).
    pub async fn repositories(&self, token: &str) -> anyhow::Result<Vec<GithubRepository>> {
        self.get(token, "/user/repos?sort=pushed&per_page=100")
            .await
    }
}
