//! This runner's prepared environment images, on its Docker engine. Tasks on the same key
//! wait for one build instead of each running the setup: a lock per key, taken before the
//! image is looked for and held by the caller while it records what it found.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_sandbox::environment::{self, Built, EnvironmentBuild, EnvironmentImage};
use berth_sandbox::{SandboxError, Stream};
use bollard::Docker;

use super::EnvironmentRules;

/// Prepared images and the rules that decide environments.
pub struct EnvironmentCache {
    docker: Docker,
    pub rules: EnvironmentRules,
    /// Opens the setup secrets users keep sealed; without it a task with some fails.
    pub keyring: Option<berth_store::sealing::Keyring>,
    /// One lock per key being looked up or built; entries go when no task holds them.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Whether the image was there or made now.
pub enum Found {
    Reused(String),
    /// Built now; `evicted` went to make room.
    Built {
        image: EnvironmentImage,
        evicted: Vec<EnvironmentImage>,
    },
    SetupFailed(berth_sandbox::ExecResult),
}

impl EnvironmentCache {
    pub fn new(docker: Docker, rules: EnvironmentRules) -> Self {
        Self {
            docker,
            rules,
            keyring: None,
            in_flight: Mutex::default(),
        }
    }

    /// With the keyring that opens setup secrets.
    pub fn with_keyring(mut self, keyring: Option<berth_store::sealing::Keyring>) -> Self {
        self.keyring = keyring;
        self
    }

    /// The id of the base image, for the cache key.
    pub async fn base_image_id(&self, image: &str) -> Result<String, SandboxError> {
        environment::image_id(&self.docker, image).await
    }

    /// Waits for `key`'s lock: one task at a time looks for, builds and records a key's
    /// image, so a task that waited for a build reads the record the builder wrote.
    pub async fn lock(&self, key: &str) -> KeyLock<'_> {
        let guard = self.lock_of(key).lock_owned().await;
        KeyLock {
            cache: self,
            key: key.to_string(),
            guard: Some(guard),
        }
    }

    async fn find_or_build(
        &self,
        build: EnvironmentBuild<'_>,
        rebuild: bool,
        on_output: &mut (dyn for<'b> FnMut(Stream, &'b [u8]) + Send),
    ) -> Result<Found, SandboxError> {
        let installation = build.container.installation.clone();
        let name = image_name(&build);
        if rebuild {
            if let Err(err) = environment::remove_environment(&self.docker, &name).await {
                tracing::info!(image = %name, error = %err, "the image to rebuild was not removed");
            }
        }
        if self.docker.inspect_image(&name).await.is_ok() {
            environment::touch_environment(&self.docker, &name).await?;
            return Ok(Found::Reused(name));
        }
        match environment::build_environment(&self.docker, build, on_output).await? {
            Built::SetupFailed(ran) => Ok(Found::SetupFailed(ran)),
            Built::Ready(image) => {
                let max = self.rules.cache_bytes;
                let evicted =
                    environment::evict_environments(&self.docker, &installation, max, &name)
                        .await?;
                for old in &evicted {
                    tracing::info!(image = %old.image, repo = %old.repo, "evicted an environment image");
                }
                Ok(Found::Built { image, evicted })
            }
        }
    }

    fn lock_of(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut in_flight = self.in_flight.lock().expect("not poisoned");
        in_flight.entry(key.to_string()).or_default().clone()
    }

    fn forget_if_unused(&self, key: &str) {
        let mut in_flight = self.in_flight.lock().expect("not poisoned");
        if in_flight
            .get(key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            in_flight.remove(key);
        }
    }
}

/// One key's lock, held; dropping it lets the next task on the key go on.
pub struct KeyLock<'a> {
    cache: &'a EnvironmentCache,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyLock<'_> {
    /// The image for the locked key: the kept one, marked used, or a new one built now (and
    /// the least recently used evicted past the bound). With `rebuild`, a kept image is
    /// removed first (a rebuild was asked for), unless a task is using it.
    pub async fn get_or_build(
        &self,
        build: EnvironmentBuild<'_>,
        rebuild: bool,
        on_output: &mut (dyn for<'b> FnMut(Stream, &'b [u8]) + Send),
    ) -> Result<Found, SandboxError> {
        assert_eq!(build.key, self.key, "the build is for the locked key");
        self.cache.find_or_build(build, rebuild, on_output).await
    }
}

impl Drop for KeyLock<'_> {
    fn drop(&mut self) {
        // Released first, so that the map's entry is the last holder when no one waits.
        self.guard.take();
        self.cache.forget_if_unused(&self.key);
    }
}

/// The name the build's image is kept under.
pub fn image_name(build: &EnvironmentBuild<'_>) -> String {
    environment::environment_image_name(&build.container.installation, build.key)
}
