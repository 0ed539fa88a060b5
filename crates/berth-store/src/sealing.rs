//! Sealing users' GitHub tokens with XChaCha20-Poly1305 before the store keeps them: a random
//! 24-byte nonce, stored before the ciphertext, and the id of the key beside it so that keys
//! can be rotated. Beside the store because the API seals (at sign-in) and the runner opens (to
//! clone and push), and the store is where the two meet.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use berth_proto::{Secret, UserId};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::{SealedToken, Store, StoreError};

const NONCE_LEN: usize = 24;

/// The keys that seal and open users' GitHub tokens, as configured.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// 32 random bytes, base64, sealing users' GitHub tokens (`openssl rand -base64 32`).
    pub encryption_key: Option<Secret>,
    /// Names `encryption_key`; stored beside each sealed token.
    pub encryption_key_id: String,
    /// Older keys still able to open tokens until `berth keys rotate` re-seals them:
    /// `id:base64,id:base64`.
    pub encryption_old_keys: Option<Secret>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            encryption_key: None,
            encryption_key_id: "k1".to_string(),
            encryption_old_keys: None,
        }
    }
}

impl Settings {
    pub fn validate(&self) -> Result<(), String> {
        self.keyring().map(drop)
    }

    /// The keys these settings name; `Ok(None)` when there is no `encryption_key`.
    pub fn keyring(&self) -> Result<Option<Keyring>, String> {
        let Some(key) = &self.encryption_key else {
            return Ok(None);
        };
        let current = parse_key(key.expose()).map_err(|why| {
            format!("encryption_key {why}; make one with `openssl rand -base64 32`")
        })?;
        let mut keys = HashMap::new();
        for (id, key) in self.old_keys()? {
            let key =
                parse_key(key).map_err(|why| format!("encryption_old_keys entry {id:?} {why}"))?;
            keys.insert(id.to_string(), key);
        }
        keys.insert(self.encryption_key_id.clone(), current);
        Ok(Some(Keyring {
            current_id: self.encryption_key_id.clone(),
            keys,
        }))
    }

    /// The `(id, base64 key)` entries of `encryption_old_keys`, written `id:base64,id:base64`.
    pub fn old_keys(&self) -> Result<Vec<(&str, &str)>, String> {
        let Some(old) = &self.encryption_old_keys else {
            return Ok(Vec::new());
        };
        old.expose()
            .split(',')
            .filter(|entry| !entry.trim().is_empty())
            .map(|entry| {
                let (id, key) = entry
                    .split_once(':')
                    .ok_or("encryption_old_keys entries are `id:base64`")?;
                Ok((id.trim(), key.trim()))
            })
            .collect()
    }
}

fn parse_key(base64: &str) -> Result<XChaCha20Poly1305, String> {
    let bytes = STANDARD
        .decode(base64.trim())
        .map_err(|_| "is not valid base64".to_string())?;
    XChaCha20Poly1305::new_from_slice(&bytes)
        .map_err(|_| format!("must be 32 bytes, not {}", bytes.len()))
}

/// The current key, which seals, and older keys, which only open.
#[derive(Clone)]
pub struct Keyring {
    current_id: String,
    keys: HashMap<String, XChaCha20Poly1305>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current_id", &self.current_id)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    pub fn current_id(&self) -> &str {
        &self.current_id
    }

    /// Seals `plaintext` for `user_id` under the current key. The user id is authenticated
    /// data, so a sealed token copied to another user's row does not open.
    pub fn seal(&self, user_id: UserId, plaintext: &str) -> SealedToken {
        let cipher = &self.keys[&self.current_id];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = user_id.0.as_bytes();
        let ciphertext = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption does not fail for short messages");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        SealedToken {
            user_id,
            key_id: self.current_id.clone(),
            sealed,
        }
    }

    pub fn open(&self, token: &SealedToken) -> Result<String, String> {
        let cipher = self.keys.get(&token.key_id).ok_or_else(|| {
            format!(
                "the token is sealed under key {:?}, which is not configured",
                token.key_id
            )
        })?;
        if token.sealed.len() < NONCE_LEN {
            return Err("sealed token is too short".into());
        }
        let (nonce, ciphertext) = token.sealed.split_at(NONCE_LEN);
        let plaintext = cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: token.user_id.0.as_bytes(),
                },
            )
            .map_err(|_| "sealed token does not open (wrong key or tampered)".to_string())?;
        String::from_utf8(plaintext).map_err(|_| "sealed token is not text".to_string())
    }
}

/// Why `berth keys rotate` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the GitHub token of user {user} does not open: {reason}")]
    Unopened { user: UserId, reason: String },
}

/// Re-seals every stored GitHub token and setup secret that is not under the current key
/// (what `berth keys rotate` runs). Returns how many were re-sealed.
pub async fn rotate_keys(store: &dyn Store, keyring: &Keyring) -> Result<usize, RotateError> {
    let mut count = rotate_setup_secrets(store, keyring).await?;
    for token in store.list_github_tokens().await? {
        if token.key_id == keyring.current_id {
            continue;
        }
        let plaintext = keyring
            .open(&token)
            .map_err(|reason| RotateError::Unopened {
                user: token.user_id,
                reason,
            })?;
        store
            .put_github_token(&keyring.seal(token.user_id, &plaintext))
            .await?;
        count += 1;
    }
    Ok(count)
}

async fn rotate_setup_secrets(store: &dyn Store, keyring: &Keyring) -> Result<usize, RotateError> {
    let mut count = 0;
    for secret in store.list_all_setup_secrets().await? {
        if secret.sealed.key_id == keyring.current_id {
            continue;
        }
        let owner = secret.sealed.user_id;
        let plaintext = keyring
            .open(&secret.sealed)
            .map_err(|reason| RotateError::Unopened {
                user: owner,
                reason,
            })?;
        let resealed = crate::SetupSecret {
            sealed: keyring.seal(owner, &plaintext),
            ..secret
        };
        store.put_setup_secret(&resealed).await?;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(key: &str, id: &str, old: Option<&str>) -> Settings {
        Settings {
            encryption_key: Some(Secret::new(key)),
            encryption_key_id: id.into(),
            encryption_old_keys: old.map(Secret::new),
        }
    }

    #[test]
    fn seals_opens_and_refuses_tampering() {
        let key = STANDARD.encode([7u8; 32]);
        let ring = settings(&key, "a", None).keyring().unwrap().unwrap();
        let user = UserId::new();
        let mut sealed = ring.seal(user, "gho_secret");
        assert!(!sealed.sealed.windows(10).any(|w| w == b"gho_secret"));
        assert_eq!(ring.open(&sealed).unwrap(), "gho_secret");
        let other = SealedToken {
            user_id: UserId::new(),
            ..sealed.clone()
        };
        assert!(ring.open(&other).is_err());
        let last = sealed.sealed.len() - 1;
        sealed.sealed[last] ^= 1;
        assert!(ring.open(&sealed).is_err());
    }

    #[test]
    fn bad_keys_say_how_to_make_one() {
        let err = settings("c2hvcnQ=", "a", None).keyring().unwrap_err();
        assert!(err.contains("openssl rand -base64 32"), "{err}");
    }

    #[test]
    fn old_keys_open_what_they_sealed() {
        let (old, new) = (STANDARD.encode([1u8; 32]), STANDARD.encode([2u8; 32]));
        let user = UserId::new();
        let sealed = settings(&old, "k1", None)
            .keyring()
            .unwrap()
            .unwrap()
            .seal(user, "gho_old");
        let both = settings(&new, "k2", Some(&format!(" k1:{old} ,")));
        assert_eq!(both.old_keys().unwrap(), [("k1", old.as_str())]);
        let ring = both.keyring().unwrap().unwrap();
        assert_eq!(ring.current_id(), "k2");
        assert_eq!(ring.open(&sealed).unwrap(), "gho_old");
        let malformed = settings(&new, "k2", Some("no-colon"));
        assert!(malformed.validate().unwrap_err().contains("id:base64"));
    }
}
