//! Which backend a server's sandboxes come from, and how to reach Fly when it is Fly.

use berth_proto::Secret;
use serde::{Deserialize, Serialize};

/// Fly's published Machines API.
pub const DEFAULT_API_URL: &str = "https://api.machines.dev/v1";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Containers on this machine's Docker engine.
    #[default]
    Docker,
    /// Fly Machines in `fly_app`.
    Fly,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where task sandboxes run: `docker` or `fly`.
    pub sandbox_backend: Backend,
    /// The Machines API's root.
    pub fly_api_url: String,
    /// The Fly app the machines are made in (it must exist).
    pub fly_app: Option<String>,
    /// A Fly token allowed to manage the app's machines.
    pub fly_api_token: Option<Secret>,
    /// The image the machines boot, from a registry Fly can pull (such as
    /// `registry.fly.io/<app>:sandbox`); without it, the sandbox image's name as it is.
    pub fly_image: Option<String>,
    /// The region machines are made in; without it, Fly picks one near the API's caller.
    pub fly_region: Option<String>,
    /// `shared` or `performance` CPUs.
    pub fly_cpu_kind: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            sandbox_backend: Backend::Docker,
            fly_api_url: DEFAULT_API_URL.to_string(),
            fly_app: None,
            fly_api_token: None,
            fly_image: None,
            fly_region: None,
            fly_cpu_kind: "shared".to_string(),
        }
    }
}

impl Settings {
    /// `Err` says which setting is wrong and what it must be.
    pub fn validate(&self) -> Result<(), String> {
        if self.sandbox_backend != Backend::Fly {
            return Ok(());
        }
        if self.fly_app.as_deref().is_none_or(str::is_empty) {
            return Err(
                "sandbox_backend is fly but fly_app is not set: name the Fly app \
                        the sandboxes' machines are made in (create it with `fly apps create`)"
                    .into(),
            );
        }
        if self.fly_api_token.is_none() {
            return Err(
                "sandbox_backend is fly but fly_api_token is not set: make a token \
                        with `fly tokens create deploy -a <app>` and set it as fly_api_token \
                        (or BERTH_FLY_API_TOKEN)"
                    .into(),
            );
        }
        if !matches!(self.fly_cpu_kind.as_str(), "shared" | "performance") {
            return Err(format!(
                "fly_cpu_kind is {:?}: it must be shared or performance",
                self.fly_cpu_kind
            ));
        }
        if !(self.fly_api_url.starts_with("https://") || self.fly_api_url.starts_with("http://")) {
            return Err(format!(
                "fly_api_url is {:?}: it must be an http(s) address such as {DEFAULT_API_URL}",
                self.fly_api_url
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fly() -> Settings {
        Settings {
            sandbox_backend: Backend::Fly,
            fly_app: Some("berth-sandboxes".into()),
            fly_api_token: Some(Secret::new("fo1_secret")),
            ..Settings::default()
        }
    }

    #[test]
    fn the_fly_backend_needs_an_app_and_a_token() {
        Settings::default().validate().unwrap();
        fly().validate().unwrap();
        let no_app = Settings {
            fly_app: None,
            ..fly()
        };
        assert!(no_app.validate().unwrap_err().contains("fly_app"));
        let no_token = Settings {
            fly_api_token: None,
            ..fly()
        };
        assert!(no_token.validate().unwrap_err().contains("fly_api_token"));
        let odd_cpu = Settings {
            fly_cpu_kind: "gpu".into(),
            ..fly()
        };
        assert!(odd_cpu.validate().unwrap_err().contains("fly_cpu_kind"));
    }

    #[test]
    fn the_token_never_shows_in_debug() {
        assert!(!format!("{:?}", fly()).contains("fo1_secret"));
    }
}
