//! Per-repository environments and setup secrets.

use berth_proto::{EnvironmentList, PutSetupSecret, SetupSecretList};
use reqwest::Method;

use crate::{checked, Client, Result};

impl Client {
    /// The environments kept for a repository (empty where the caller may not see them).
    pub async fn list_environments(&self, repo_url: &str) -> Result<EnvironmentList> {
        let request = self.request(Method::GET, "/v1/environments")?;
        self.send_json(request.query(&[("repo_url", repo_url)]))
            .await
    }

    /// One environment (per runner node that keeps it), with the setup's log.
    pub async fn get_environment(&self, key: &str) -> Result<EnvironmentList> {
        let path = format!("/v1/environments/{key}");
        self.send_json(self.request(Method::GET, &path)?).await
    }

    /// Asks for the environment to be prepared again before its next use.
    pub async fn rebuild_environment(&self, key: &str) -> Result<EnvironmentList> {
        let path = format!("/v1/environments/{key}/rebuild");
        self.send_json(self.request(Method::POST, &path)?).await
    }

    pub async fn list_setup_secrets(&self, repo_url: &str) -> Result<SetupSecretList> {
        let request = self.request(Method::GET, "/v1/setup-secrets")?;
        self.send_json(request.query(&[("repo_url", repo_url)]))
            .await
    }

    pub async fn put_setup_secret(&self, repo_url: &str, name: &str, value: &str) -> Result<()> {
        let body = PutSetupSecret {
            repo_url: repo_url.into(),
            name: name.into(),
            value: value.into(),
        };
        let request = self.request(Method::PUT, "/v1/setup-secrets")?.json(&body);
        checked(self.send(request).await?).await?;
        Ok(())
    }

    pub async fn delete_setup_secret(&self, repo_url: &str, name: &str) -> Result<()> {
        let request = self.request(Method::DELETE, "/v1/setup-secrets")?;
        let request = request.query(&[("repo_url", repo_url), ("name", name)]);
        checked(self.send(request).await?).await?;
        Ok(())
    }
}
