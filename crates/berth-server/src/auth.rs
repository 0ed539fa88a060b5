//! API tokens: how they are made, how they are stored (only a SHA-256 hash), and the extractor
//! that turns `Authorization: Bearer …` into the caller.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use berth_proto::{CreatedToken, UserId};
use berth_store::{NewToken, Principal, Store};
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
            // Browsers signed in with GitHub carry a session cookie instead.
            let session = crate::accounts::sign_in_cookie(&parts.headers);
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
}
