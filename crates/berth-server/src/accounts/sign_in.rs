//! What both sign-in flows share: deciding who may sign in, remembering the user and their
//! sealed GitHub token, and the web session cookie.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use berth_store::Account;
use rand::RngCore;
use sha2::{Digest, Sha256};
use utoipa::openapi::RefOr;

use super::{audit, github::GitHub, rate_limits::TooManyRequests};
use crate::auth::hash_token;
use crate::error::ApiError;
use crate::AppState;

pub const SESSION_COOKIE: &str = "berth_session";
pub const STATE_COOKIE: &str = "berth_oauth_state";

/// 32 random bytes, URL-safe base64: session ids, OAuth states, PKCE verifiers.
pub fn random_string() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// PKCE `S256`: the challenge sent with the authorize redirect.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

pub fn github(state: &AppState) -> Result<&Arc<GitHub>, ApiError> {
    state.accounts.github.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "sign_in_disabled",
            "GitHub sign-in is not configured on this server (github_client_id)",
        )
    })
}

/// GitHub sign-in, for the handlers of its endpoints. Taken before anything else of the
/// request, so that where sign-in is off its endpoints answer 404 `sign_in_disabled` whatever
/// the request holds, as routes that are not there.
pub struct SignIn(pub Arc<GitHub>);

impl FromRequestParts<AppState> for SignIn {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        github(state).cloned().map(SignIn)
    }
}

/// In the OpenAPI document, the sign-in endpoints list what this extractor answers.
impl utoipa::IntoResponses for SignIn {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        let off = crate::openapi::error_response(
            "404",
            "`sign_in_disabled`: GitHub sign-in is not configured on this server",
        );
        BTreeMap::from([("404".to_string(), RefOr::T(off))])
    }
}

pub enum SignInError {
    Api(ApiError),
    Limited(TooManyRequests),
}

impl From<ApiError> for SignInError {
    fn from(err: ApiError) -> Self {
        SignInError::Api(err)
    }
}

impl axum::response::IntoResponse for SignInError {
    fn into_response(self) -> axum::response::Response {
        match self {
            SignInError::Api(err) => err.into_response(),
            SignInError::Limited(limited) => limited.into_response(),
        }
    }
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "sign_in_refused", message)
}

/// Takes a GitHub access token that has just been granted: checks the user against the
/// allow-list and their account, then stores them and their sealed token.
pub async fn finish(
    state: &AppState,
    access_token: &str,
    how: &str,
) -> Result<Account, SignInError> {
    let github = github(state)?;
    let identity = github
        .identity(access_token)
        .await
        .map_err(ApiError::internal)?;
    if let Err(retry_after) = state
        .accounts
        .sign_in_limit
        .take(&format!("github:{}", identity.github_id))
    {
        return Err(SignInError::Limited(TooManyRequests {
            retry_after,
            what: "sign-in attempts",
        }));
    }
    let settings = &state.settings;
    if !settings.allowed_logins.is_empty() || !settings.allowed_orgs.is_empty() {
        let login_listed = settings
            .allowed_logins
            .iter()
            .any(|login| login.eq_ignore_ascii_case(&identity.login));
        let org_listed = !settings.allowed_orgs.is_empty() && {
            let orgs = github
                .org_logins(access_token)
                .await
                .map_err(ApiError::internal)?;
            orgs.iter().any(|org| {
                settings
                    .allowed_orgs
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(org))
            })
        };
        if !login_listed && !org_listed {
            audit(
                state,
                None,
                "sign_in.refused",
                None,
                serde_json::json!({"login": identity.login, "reason": "not on the allow-list", "via": how}),
            )
            .await;
            return Err(forbidden(format!(
                "GitHub user {} is not allowed to sign in to this server; ask an admin to add \
                 the login or one of its organisations to the allow-list",
                identity.login
            ))
            .into());
        }
    }
    let account = state
        .store
        .upsert_github_user(&identity, settings.first_user_admin)
        .await
        .map_err(ApiError::from)?;
    if account.disabled_at.is_some() {
        return Err(forbidden(format!(
            "user {} is disabled on this server",
            identity.login
        ))
        .into());
    }
    let keyring =
        state.shared.keyring.as_ref().ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("encryption_key is not configured"))
        })?;
    state
        .store
        .put_github_token(&keyring.seal(account.id, access_token))
        .await
        .map_err(ApiError::from)?;
    audit(
        state,
        Some(account.id),
        "sign_in",
        Some(account.id),
        serde_json::json!({"login": account.login, "via": how}),
    )
    .await;
    Ok(account)
}

/// Starts a web session; returns the `Set-Cookie` value.
pub async fn start_session(
    state: &AppState,
    account: &Account,
    secure: bool,
) -> Result<String, ApiError> {
    let session = random_string();
    let ttl = state.settings.session_ttl_secs;
    state
        .store
        .insert_session(account.id, &hash_token(&session), (ttl * 1000) as i64)
        .await?;
    Ok(cookie(SESSION_COOKIE, &session, ttl, secure))
}

pub fn cookie(name: &str, value: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
}

/// The value of one cookie in the request.
pub fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Where people reach the server, for the OAuth callback, and whether it is over TLS.
pub fn public_base(state: &AppState, headers: &HeaderMap) -> (String, bool) {
    if let Some(url) = &state.settings.public_url {
        let url = url.trim_end_matches('/').to_string();
        let secure = url.starts_with("https://");
        return (url, secure);
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|proto| proto.as_bytes() == b"https");
    let scheme = if secure { "https" } else { "http" };
    (format!("{scheme}://{host}"), secure)
}
