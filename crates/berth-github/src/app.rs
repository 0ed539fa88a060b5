//! Acting as the GitHub App: a JWT signed with the App's private key (RS256) proves the App;
//! GitHub trades it for an installation access token, which Berth asks for one repository at a
//! time and keeps until shortly before it expires. A token GitHub refuses early (revoked, the
//! clock off) is forgotten and asked for again once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::json;

use crate::repository::Repository;
use crate::rest::Rest;
use crate::{GitHubError, Result};

/// The App's id and private key, as GitHub showed them when the App was made.
#[derive(Clone)]
pub struct AppCredentials {
    pub app_id: u64,
    /// The PEM GitHub generated (`-----BEGIN RSA PRIVATE KEY-----` …).
    pub private_key_pem: String,
}

impl std::fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCredentials")
            .field("app_id", &self.app_id)
            .field("private_key_pem", &"[secret]")
            .finish()
    }
}

/// A token and when it stops being handed out.
struct Cached {
    token: String,
    renew_at: Instant,
}

/// The App on one GitHub, with its cache of installation tokens.
pub struct GitHubApp {
    rest: Rest,
    app_id: u64,
    key: EncodingKey,
    /// `(installation, owner/name)` → token.
    tokens: Mutex<HashMap<(u64, String), Cached>>,
    renew_before: Duration,
}

impl std::fmt::Debug for GitHubApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubApp")
            .field("app_id", &self.app_id)
            .field("api_url", &self.rest.api_url())
            .finish_non_exhaustive()
    }
}

#[derive(serde::Serialize)]
struct Claims {
    iat: u64,
    exp: u64,
    iss: String,
}

impl GitHubApp {
    /// The App on the GitHub whose API is at `api_url`; `Err` when the key is not an RSA
    /// private key in PEM.
    pub fn new(api_url: &str, credentials: &AppCredentials) -> Result<Self, String> {
        let key = EncodingKey::from_rsa_pem(credentials.private_key_pem.as_bytes())
            .map_err(|err| format!("the GitHub App's private key is not an RSA PEM: {err}"))?;
        Ok(Self {
            rest: Rest::new(api_url),
            app_id: credentials.app_id,
            key,
            tokens: Mutex::new(HashMap::new()),
            renew_before: Duration::from_secs(5 * 60),
        })
    }

    /// How long before its expiry a token is replaced (five minutes unless set): a token is
    /// never handed out for a clone or a push that could outlive it.
    pub fn renewing_before(mut self, margin: Duration) -> Self {
        self.renew_before = margin;
        self
    }

    pub fn app_id(&self) -> u64 {
        self.app_id
    }

    pub fn rest(&self) -> &Rest {
        &self.rest
    }

    /// A JWT for the App: issued a minute ago (GitHub's clock may be behind), valid for nine
    /// minutes (GitHub takes at most ten).
    pub fn jwt(&self) -> Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let claims = Claims {
            iat: now.saturating_sub(60),
            exp: now + 9 * 60,
            iss: self.app_id.to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(|err| GitHubError::new(None, format!("signing the App's JWT failed: {err}")))
    }

    /// An installation token that reaches `repository` (`owner/name`) only: the cached one
    /// while it is good for longer than the renewal margin, else a new one.
    pub async fn installation_token(&self, installation: u64, repository: &str) -> Result<String> {
        let key = (installation, repository.to_string());
        if let Some(cached) = self.lock().get(&key) {
            if Instant::now() < cached.renew_at {
                return Ok(cached.token.clone());
            }
        }
        let name = repository
            .split_once('/')
            .map_or(repository, |(_, name)| name);
        let (_, answer) = self
            .rest
            .call(
                &format!("Bearer {}", self.jwt()?),
                Method::POST,
                &format!("/app/installations/{installation}/access_tokens"),
                Some(&json!({ "repositories": [name] })),
            )
            .await?;
        let token = answer["token"]
            .as_str()
            .ok_or_else(|| GitHubError::new(None, "GitHub sent no installation token"))?
            .to_string();
        let lifetime = answer["expires_at"]
            .as_str()
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
            .and_then(|at| {
                (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                    .to_std()
                    .ok()
            })
            .unwrap_or_default();
        let renew_at = Instant::now() + lifetime.saturating_sub(self.renew_before);
        self.lock().insert(
            key,
            Cached {
                token: token.clone(),
                renew_at,
            },
        );
        Ok(token)
    }

    /// Drops the cached token, after GitHub refused it.
    pub fn forget_token(&self, installation: u64, repository: &str) {
        self.lock().remove(&(installation, repository.to_string()));
    }

    /// The calls Berth makes on `repository` (`owner/name`) as the installation.
    pub fn repository(&self, installation: u64, repository: &str) -> Repository<'_> {
        Repository::new(self, installation, repository)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, String), Cached>> {
        self.tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
