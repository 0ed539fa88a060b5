//! GitHub signs each webhook delivery with the App's webhook secret: `X-Hub-Signature-256` is
//! `sha256=` and the hex HMAC-SHA256 of the raw body. The check runs on the bytes as they
//! arrived, before anything reads them, and compares in constant time.

use hmac::Mac;
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Why a delivery's signature was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header.
    Missing,
    /// The header is not `sha256=` and 64 hex digits.
    Malformed,
    /// The signature is not the body's under the secret.
    Mismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SignatureError::Missing => "the delivery is not signed (X-Hub-Signature-256)",
            SignatureError::Malformed => "X-Hub-Signature-256 is not sha256=<64 hex digits>",
            SignatureError::Mismatch => "X-Hub-Signature-256 does not match the body",
        })
    }
}

/// Checks `header` (the value of `X-Hub-Signature-256`) against `body` under `secret`.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let given = decode_hex(hex).ok_or(SignatureError::Malformed)?;
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    // `verify` compares in constant time.
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// The header GitHub would send with `body` under `secret` (for tests and tools).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_documented_example_verifies() {
        // The example in GitHub's "Validating webhook deliveries" documentation.
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            sign(b"It's a Secret to Everybody", b"Hello, World!"),
            header
        );
        verify(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            Some(header),
        )
        .unwrap();
    }

    #[test]
    fn anything_else_is_refused() {
        let good = sign(b"secret", b"body");
        assert_eq!(
            verify(b"secret", b"body", None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(b"secret", b"body!", Some(&good)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", b"body", Some(&good)),
            Err(SignatureError::Mismatch)
        );
        let sha1 = good.replace("sha256=", "sha1=");
        for bad in [&sha1, "sha256=", "sha256=zz", &good[..good.len() - 2]] {
            assert_eq!(
                verify(b"secret", b"body", Some(bad)),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }
}
