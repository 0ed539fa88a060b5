//! The GitHub App side of the fake: the App's public key checks the RS256 JWT on `/app/…`;
//! installation tokens are issued for the repositories asked (of those the App is installed
//! on), expire after a lifetime the test sets, and are refused once expired or outside their
//! repositories, as GitHub does.

use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

use super::{lock, message, FakeGitHubApi, Shared};

/// A private key made for these tests and nothing else, and its public half.
pub const APP_PRIVATE_KEY: &str = include_str!("app_key.pem");
const APP_PUBLIC_KEY: &str = include_str!("app_key.pub.pem");

/// One installation token as issued.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub token: String,
    pub installation: u64,
    /// `owner/name` of each repository it reaches.
    pub repositories: Vec<String>,
    expires: Instant,
}

pub(crate) struct AppSide {
    pub(crate) app_id: u64,
    pub(crate) webhook_secret: String,
    pub(crate) installation: u64,
    /// Repositories the App is installed on.
    repositories: Vec<String>,
    key: DecodingKey,
    lifetime: Duration,
    pub(crate) tokens: Vec<IssuedToken>,
    /// JWTs seen, refused ones included: `(accepted, issuer)`.
    jwts: Vec<(bool, String)>,
}

#[derive(serde::Deserialize)]
struct Claims {
    iss: String,
}

impl AppSide {
    /// `None` when the request may go on: a valid JWT on `/app/…`, or a live installation
    /// token for the repository of the path.
    pub(crate) fn refused(&self, path: &str, headers: &HeaderMap) -> Option<()> {
        let bearer = headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))?;
        if path.starts_with("/app/") {
            return (!self.jwt_ok(bearer)).then_some(());
        }
        let token = self.tokens.iter().find(|t| t.token == bearer)?;
        let repository = path
            .strip_prefix("/repos/")
            .map(|rest| rest.splitn(3, '/').take(2).collect::<Vec<_>>().join("/"));
        let in_scope = match repository {
            Some(repository) => token.repositories.contains(&repository),
            None => true,
        };
        (Instant::now() >= token.expires || !in_scope).then_some(())
    }

    fn jwt_ok(&self, jwt: &str) -> bool {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_required_spec_claims(&["exp", "iat", "iss"]);
        jsonwebtoken::decode::<Claims>(jwt, &self.key, &validation)
            .is_ok_and(|decoded| decoded.claims.iss == self.app_id.to_string())
    }
}

impl FakeGitHubApi {
    /// Installs a GitHub App with id `app_id` (its key is [`APP_PRIVATE_KEY`]) on
    /// `repositories` as installation `installation`; its deliveries are signed with
    /// `webhook_secret`. Tokens live an hour unless [`FakeGitHubApi::set_token_lifetime`].
    pub fn install_app(
        &self,
        app_id: u64,
        installation: u64,
        repositories: &[&str],
        webhook_secret: &str,
    ) {
        lock(&self.inner).app = Some(AppSide {
            app_id,
            webhook_secret: webhook_secret.to_string(),
            installation,
            repositories: repositories.iter().map(|r| r.to_string()).collect(),
            key: DecodingKey::from_rsa_pem(APP_PUBLIC_KEY.as_bytes()).expect("the test key"),
            lifetime: Duration::from_secs(3600),
            tokens: Vec::new(),
            jwts: Vec::new(),
        });
    }

    /// How long installation tokens issued from now on live.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        if let Some(app) = lock(&self.inner).app.as_mut() {
            app.lifetime = lifetime;
        }
    }

    /// The installation tokens issued so far, oldest first.
    pub fn issued_tokens(&self) -> Vec<IssuedToken> {
        lock(&self.inner)
            .app
            .as_ref()
            .map(|app| app.tokens.clone())
            .unwrap_or_default()
    }

    /// What GitHub's git host takes, for [`crate::GitServer::accept_tokens`]: whether a token
    /// is an installation token of this App, not expired, that reaches the repository.
    pub fn git_credentials(&self) -> impl Fn(&str, &str) -> bool + Send + Sync + 'static {
        let inner = self.inner.clone();
        move |repository, token| {
            let inner = lock(&inner);
            let tokens = inner.app.as_ref().map_or(&[][..], |app| &app.tokens[..]);
            tokens.iter().any(|issued| {
                issued.token == token
                    && Instant::now() < issued.expires
                    && issued.repositories.iter().any(|r| r == repository)
            })
        }
    }

    /// How many JWTs were presented, and how many of those were refused.
    pub fn jwts(&self) -> (usize, usize) {
        let inner = lock(&self.inner);
        let seen = inner
            .app
            .as_ref()
            .map(|app| app.jwts.clone())
            .unwrap_or_default();
        (seen.len(), seen.iter().filter(|(ok, _)| !ok).count())
    }
}

pub(crate) fn routes() -> Router<Shared> {
    Router::new().route(
        "/app/installations/{installation}/access_tokens",
        post(access_token),
    )
}

async fn access_token(
    State(inner): State<Shared>,
    Path(installation): Path<u64>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut inner = lock(&inner);
    let Some(app) = inner.app.as_mut() else {
        return message(StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
    };
    let jwt = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let accepted = app.jwt_ok(&jwt);
    app.jwts.push((accepted, app.app_id.to_string()));
    if !accepted {
        return message(
            StatusCode::UNAUTHORIZED,
            json!({"message": "A JSON web token could not be decoded"}),
        );
    }
    if installation != app.installation {
        return message(StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
    }
    let asked: Vec<String> = body["repositories"]
        .as_array()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let repositories: Vec<String> = app
        .repositories
        .iter()
        .filter(|full| {
            asked.is_empty() || asked.iter().any(|name| full.ends_with(&format!("/{name}")))
        })
        .cloned()
        .collect();
    if repositories.is_empty() {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": "There is at least one repository that does not exist or is not accessible to the parent installation."}),
        );
    }
    let token = format!("ghs_fake{:016x}", rand::random::<u64>());
    let expires_at = chrono::Utc::now() + app.lifetime;
    app.tokens.push(IssuedToken {
        token: token.clone(),
        installation,
        repositories: repositories.clone(),
        expires: Instant::now() + app.lifetime,
    });
    let names: Vec<Value> = repositories
        .iter()
        .map(|r| json!({"full_name": r}))
        .collect();
    message(
        StatusCode::CREATED,
        json!({
            "token": token,
            "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "permissions": {"contents": "write", "issues": "write", "pull_requests": "write"},
            "repository_selection": "selected",
            "repositories": names,
        }),
    )
}
