//! The `Idempotency-Key` header of `POST /v1/tasks` and of follow-ups: a client that retries
//! with the same key gets the task its first request made instead of a second one.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};

const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The `Idempotency-Key` header, if the client sent one.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default().trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(key.to_string()))
}

/// Identifies the request a key was first used for, so a reused key is told apart from a retry.
pub(crate) fn request_hash(request: &impl serde::Serialize) -> String {
    let canonical = serde_json::to_vec(request).unwrap_or_default();
    let digest = Sha256::digest(canonical);
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", key.parse().unwrap());
        headers
    }

    #[test]
    fn the_key_is_optional_trimmed_and_bounded() {
        assert_eq!(idempotency_key(&HeaderMap::new()).unwrap(), None);
        assert_eq!(
            idempotency_key(&headers(" retry-1 ")).unwrap().as_deref(),
            Some("retry-1")
        );
        let longest = "k".repeat(MAX_IDEMPOTENCY_KEY_LEN);
        assert!(idempotency_key(&headers(&longest)).unwrap().is_some());
        for refused in [" ".to_string(), format!("{longest}k")] {
            let err = idempotency_key(&headers(&refused)).unwrap_err();
            assert_eq!(err.code(), "invalid_idempotency_key");
        }
    }

    #[test]
    fn the_same_request_hashes_the_same_and_another_does_not() {
        let first = serde_json::json!({"prompt": "fix it", "repo_url": "https://github.com/a/b"});
        let again = first.clone();
        let other =
            serde_json::json!({"prompt": "fix it too", "repo_url": "https://github.com/a/b"});
        assert_eq!(request_hash(&first), request_hash(&again));
        assert_ne!(request_hash(&first), request_hash(&other));
        assert_eq!(request_hash(&first).len(), 64);
    }
}
