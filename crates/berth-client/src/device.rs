//! Signing in from a terminal or phone with GitHub's device flow, through Berth: start, show
//! the person a code and an address, poll at the pace asked for, and end with a Berth API
//! token for this device.

use std::time::{Duration, Instant};

use berth_proto::CreatedToken;
use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::{checked, Client, ClientError, Result};

/// What to show the person: go to `verification_uri` and enter `user_code`.
#[derive(Clone, Debug, Deserialize)]
pub struct DeviceCode {
    pub user_code: String,
    pub verification_uri: String,
    /// Seconds the code stays valid.
    pub expires_in: u64,
    /// Seconds to wait between polls.
    pub interval: u64,
    device_code: String,
}

#[derive(Serialize)]
struct Poll<'a> {
    device_code: &'a str,
    name: &'a str,
}

/// RFC 8628: after `slow_down`, wait this much longer between polls from then on.
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

/// Runs the device flow against the Berth server at `base_url`. `show` is called once with
/// the code to display; the returned token is named `token_name` and is listed and revocable
/// like any other.
pub async fn login(
    base_url: &str,
    token_name: &str,
    show: impl FnOnce(&DeviceCode),
) -> Result<CreatedToken> {
    let client = Client::new(base_url, None)?;
    let response = client
        .request(Method::POST, "/v1/auth/device")?
        .send()
        .await?;
    let code: DeviceCode = checked(response).await?.json().await?;
    show(&code);
    let deadline = Instant::now() + Duration::from_secs(code.expires_in);
    let mut interval = Duration::from_secs(code.interval.max(1));
    loop {
        tokio::time::sleep(interval).await;
        let request = client
            .request(Method::POST, "/v1/auth/device/token")?
            .json(&Poll {
                device_code: &code.device_code,
                name: token_name,
            });
        match checked(request.send().await?).await {
            Ok(response) => return Ok(response.json().await?),
            Err(err) if err.code() == Some("authorization_pending") => {}
            Err(err) if err.code() == Some("slow_down") => interval += SLOW_DOWN_STEP,
            Err(err) if err.status() == Some(reqwest::StatusCode::TOO_MANY_REQUESTS) => {
                interval += SLOW_DOWN_STEP
            }
            Err(err) => return Err(err),
        }
        if Instant::now() >= deadline {
            return Err(ClientError::Api {
                status: reqwest::StatusCode::BAD_REQUEST,
                code: "expired_token".into(),
                message: "the code expired before it was entered; run the sign-in again".into(),
            });
        }
    }
}
