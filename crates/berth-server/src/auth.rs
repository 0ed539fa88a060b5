//! API tokens: how they are made, how they are stored (only a SHA-256 hash), and the extractors
//! that turn `Authorization: Bearer …` (or a session cookie) into the caller, or into an admin.
//! Handlers take them before anything else of the request, so that a caller without the right
//! gets 401 or 403 whatever else is wrong with the request.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use berth_proto::{CreatedToken, UserId};
use berth_store::{Account, NewToken, Principal, Store};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::AppState;

/// Every token starts with this, so that it is recognisable in a config file or a leak scan.
pub const TOKEN_PREFIX: &str = "berth_";
/// How much of a token is kept in the clear, to tell tokens apart in a list.
const SHOWN_PREFIX_LEN: usize = TOKEN_PREFIX.len() + 6;

/// A new token: 32 random bytes, URL-safe base64, after the prefix.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Tokens carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Makes a token for the user, stores its hash and returns the secret, once.
pub async fn issue_token(
    store: &dyn Store,
    user_id: UserId,
    name: &str,
) -> Result<CreatedToken, berth_store::StoreError> {
    let token = generate_token();
    let info = store
        .insert_token(NewToken {
            user_id,
            name: name.to_string(),
            prefix: token[..SHOWN_PREFIX_LEN].to_string(),
            token_hash: hash_token(&token),
        })
        .await?;
    Ok(CreatedToken { token, info })
}

/// The authenticated caller of a request.
pub struct Caller(pub Principal);

impl Caller {
    pub fn user_id(&self) -> UserId {
        self.0.user.id
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            // Browsers (the web app) carry a session cookie instead, which another site's page
            // could make them send: such requests are refused before the cookie is read.
            let session = crate::accounts::sign_in_cookie(&parts.headers);
            if session.is_some() && cross_site(&parts.headers) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "cross_site_request",
                    "a request from another site's page cannot use this site's session",
                ));
            }
            let principal = match session {
                Some(session) => {
                    state
                        .store
                        .authenticate_session(&hash_token(session))
                        .await?
                }
                None => None,
            };
            return principal.map(Caller).ok_or_else(|| {
                ApiError::unauthorized(
                    "missing Authorization header; send `Authorization: Bearer <token>`",
                )
            });
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("Authorization header must be `Bearer <token>`")
            })?;
        let principal = state.store.authenticate(&hash_token(token)).await?;
        let principal =
            principal.ok_or_else(|| ApiError::unauthorized("token is unknown or revoked"))?;
        let account = state.store.get_account(principal.user.id).await?;
        if account.is_none_or(|account| account.disabled_at.is_some()) {
            return Err(ApiError::unauthorized("this user is disabled"));
        }
        Ok(Caller(principal))
    }
}

/// Whether the browser says the request comes from another site's page: by `Sec-Fetch-Site`
/// where it sends one (every current browser), else by an `Origin` that is not this host.
/// A request with neither is not a browser's cross-site request.
pub(crate) fn cross_site(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    match (text("origin"), text("host")) {
        (Some(origin), Some(host)) => {
            let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            !origin_host.eq_ignore_ascii_case(host)
        }
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The caller, when an admin who is not disabled; 403 `forbidden` for anyone else signed in.
pub struct Admin(pub Account);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        match state.store.get_account(caller.user_id()).await? {
            Some(account) if account.is_admin && account.disabled_at.is_none() => {
                Ok(Admin(account))
            }
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this needs an admin",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_prefixed() {
        let a = generate_token();
        let b = generate_token();
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert_ne!(a, b);
        assert_ne!(hash_token(&a), hash_token(&b));
        assert_eq!(hash_token(&a).len(), 64);
    }

    #[test]
    fn requests_from_other_sites_are_told_apart() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, value.parse().unwrap());
            }
            map
        };
        let host = ("host", "berth.example:8080");
        assert!(!cross_site(&headers(&[host])));
        assert!(!cross_site(&headers(&[
            host,
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(!cross_site(&headers(&[host, ("sec-fetch-site", "none")])));
        assert!(cross_site(&headers(&[
            host,
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(cross_site(&headers(&[
            host,
            ("sec-fetch-site", "same-site")
        ])));
        let same = ("origin", "https://berth.example:8080");
        assert!(!cross_site(&headers(&[host, same])));
        assert!(cross_site(&headers(&[
            host,
            ("origin", "https://evil.example")
        ])));
        assert!(cross_site(&headers(&[host, ("origin", "null")])));
    }
}
