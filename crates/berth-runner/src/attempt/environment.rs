//! The attempt's environment: when the repository declares one and this runner keeps
//! prepared images, the sandbox starts from the image its setup made (built now if it is
//! not there yet) instead of the server's image with the setup run in it.

use berth_proto::{EventKind, Task};
use berth_sandbox::environment::EnvironmentBuild;
use berth_sandbox::{BoundedOutput, ExecRequest, ExecResult, Limits, SandboxSpec, Stream};
use berth_store::EnvironmentRecord;
use serde_json::json;

use super::{Ending, Lifecycle, Work};
use crate::environment::cache::{Found, KeyLock};
use crate::environment::{self, EnvironmentCache};
use crate::git::Checkout;
use crate::output::OutputEvents;
use crate::redact::Redactor;
use crate::Context;

/// Where the attempt's sandbox comes from.
pub(super) struct Prepared {
    pub image: String,
    pub limits: Limits,
    /// Domains the work phase may reach, for the network policy.
    pub allowed_domains: Vec<String>,
    /// Whether the setup still has to run in the task's own sandbox (no prepared image).
    pub setup_pending: bool,
    /// Whether the image may hold files in `/workspace` the task did not make: a prepared
    /// image (its setup's output), or an operator's own image.
    pub image_leaves_files: bool,
}

impl<W: Work> Lifecycle<W> {
    /// Decides the sandbox's image and limits from the repository's environment file, if it
    /// has one and this runner keeps environments; otherwise the server's image and setup.
    pub(super) async fn environment(
        &self,
        task: &Task,
        ctx: &Context,
        checkout: &Checkout,
        limits: Limits,
        redactor: &Redactor,
    ) -> Result<Prepared, Ending> {
        let server = Prepared {
            image: self.settings.image.clone(),
            limits,
            allowed_domains: Vec::new(),
            setup_pending: true,
            image_leaves_files: self.settings.image != berth_sandbox::default_image(),
        };
        let Some(cache) = self.settings.environments.as_deref() else {
            return Ok(server);
        };
        let repo = checkout.path();
        let Some(declared) = environment::read(&repo).map_err(Ending::Failed)? else {
            return Ok(server);
        };
        let server_setup = self.server_setup(task);
        let env = environment::resolve(
            &declared,
            &repo,
            &cache.rules,
            &self.settings.image,
            server_setup.as_deref(),
            limits,
        )
        .map_err(Ending::Failed)?;
        let secrets = setup_secrets(cache, task, ctx).await?;
        let redactor = redactor.with(secrets.iter().map(|(_, value)| value));
        let base_id = cache.base_image_id(&env.base_image).await.map_err(|err| {
            Ending::Failed(format!(
                "the environment's base image cannot be used: {err}"
            ))
        })?;
        // What a setup with the owner's secrets made is the owner's alone.
        let scope = match secrets.is_empty() {
            true => task.repo_url.clone(),
            false => format!("{}\0owner:{}", task.repo_url, task.owner_id),
        };
        let key = env.cache_key(&scope, &base_id);
        let build = Build {
            env: &env,
            key: &key,
            secrets,
        };
        let image = self
            .prepared_image(cache, build, task, ctx, &repo, &redactor)
            .await?;
        Ok(Prepared {
            image,
            limits: env.limits,
            allowed_domains: env.network_allow,
            setup_pending: false,
            image_leaves_files: true,
        })
    }

    /// The prepared image for the build's key: reused, or built now; its state, log and size
    /// recorded for the API, and a setup that fails failing the task.
    async fn prepared_image(
        &self,
        cache: &EnvironmentCache,
        build: Build<'_>,
        task: &Task,
        ctx: &Context,
        repo: &std::path::Path,
        redactor: &Redactor,
    ) -> Result<String, Ending> {
        let (env, key) = (build.env, build.key);
        let node = ctx.node_id.as_str();
        let build = self.build_of(build, task, ctx, repo);
        let mut record = EnvironmentRecord {
            node_id: node.to_string(),
            key: key.to_string(),
            repo_url: task.repo_url.clone(),
            image: environment::cache::image_name(&build),
            state: "building".into(),
            log: String::new(),
            size_bytes: 0,
            last_used: 0,
            created_at: 0,
        };
        let call = json!({
            "id": "setup", "name": "environment",
            "input": {"key": key, "base_image": env.base_image, "setup": env.setup},
        });
        let _ = ctx.emit(EventKind::ToolCall, redactor.json(&call)).await;
        // The key stays locked while this task reads, builds and records it: a task that
        // waited for another's build reads that build's record here, log and all.
        let key_lock = tokio::select! {
            held = cache.lock(key) => held,
            () = ctx.stop.cancelled() => return Err(Ending::Stopped),
        };
        let known = ctx.store.get_environment(key).await?;
        let mine = known.into_iter().find(|known| known.node_id == node);
        let rebuild = mine.as_ref().is_some_and(|known| known.state == "stale");
        if mine.as_ref().is_none_or(|known| known.state != "ready") {
            ctx.store.put_environment(&record).await?;
        }
        let (found, log) = run_build(&key_lock, build, rebuild, ctx, redactor).await;
        record.log = log;
        let found = match found {
            Ok(found) => found,
            Err(ending) => {
                // The engine failed mid-build: nothing was kept, and the next task tries again.
                if !matches!(ending, Ending::Stopped) {
                    record.state = "failed".into();
                    let _ = ctx.store.put_environment(&record).await;
                }
                return Err(ending);
            }
        };
        let content = match found {
            Found::Reused(_) => {
                // The log and size are those of the build that made the image.
                if let Some(built) = mine {
                    record.log = built.log;
                    record.size_bytes = built.size_bytes;
                }
                record.state = "ready".into();
                format!("reused the prepared image {}", record.image)
            }
            Found::Built { image, evicted } => {
                record.state = "ready".into();
                record.size_bytes = image.size_bytes as i64;
                for old in evicted {
                    ctx.store.delete_environment(node, &old.key).await?;
                }
                format!(
                    "prepared the image {} ({} bytes)",
                    image.image, image.size_bytes
                )
            }
            Found::SetupFailed(ran) => {
                record.state = "failed".into();
                ctx.store.put_environment(&record).await?;
                return Err(Ending::Failed(redactor.text(&setup_failure(&ran))));
            }
        };
        ctx.store.put_environment(&record).await?;
        let result = json!({"tool_use_id": "setup", "content": content, "is_error": false});
        let _ = ctx.emit(EventKind::ToolResult, result).await;
        Ok(record.image)
    }

    /// What the cache builds from, when the key's image is not there.
    fn build_of<'a>(
        &self,
        build: Build<'a>,
        task: &'a Task,
        ctx: &Context,
        repo: &'a std::path::Path,
    ) -> EnvironmentBuild<'a> {
        let Build { env, key, secrets } = build;
        let setup = env.setup.as_ref().map(|script| ExecRequest {
            timeout: self.settings.setup_timeout,
            env: secrets,
            ..ExecRequest::new(script.clone())
        });
        EnvironmentBuild {
            container: SandboxSpec {
                installation: ctx.store.installation_id().to_string(),
                task_id: task.id.to_string(),
                attempt: task.attempt,
                node_id: ctx.node_id.clone(),
                image: env.base_image.clone(),
                limits: env.limits,
            },
            key,
            repo_url: &task.repo_url,
            workspace: repo,
            max_workspace_bytes: self.settings.git.limits.max_bytes,
            variables: env
                .variables
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect(),
            setup,
        }
    }
}

/// Finds or builds the image, the setup's output streamed as events under the `setup` call
/// and kept (redacted, bounded) as the log, until the attempt is asked to stop.
async fn run_build(
    key_lock: &KeyLock<'_>,
    build: EnvironmentBuild<'_>,
    rebuild: bool,
    ctx: &Context,
    redactor: &Redactor,
) -> (Result<Found, Ending>, String) {
    let output = OutputEvents::start(ctx, redactor, Some("setup"));
    let mut to_events = output.sink();
    let mut log = BoundedOutput::new(LOG_BYTES);
    let mut on_output = |stream: Stream, bytes: &[u8]| {
        log.push(bytes);
        to_events(stream, bytes);
    };
    let found = tokio::select! {
        found = key_lock.get_or_build(build, rebuild, &mut on_output) => Some(found),
        () = ctx.stop.cancelled() => None,
    };
    drop(to_events);
    output.finish().await;
    let log = redactor.text(&String::from_utf8_lossy(&log.into_bytes()));
    let found = match found {
        Some(found) => found.map_err(Ending::from),
        None => Err(Ending::Stopped),
    };
    (found, log)
}

/// Bytes of the setup's output kept as the environment's log.
const LOG_BYTES: usize = 64 << 10;

/// What one environment build is made of.
struct Build<'a> {
    env: &'a environment::Environment,
    key: &'a str,
    /// The owner's setup secrets, opened: for the setup's command alone.
    secrets: Vec<(String, String)>,
}

/// The task owner's setup secrets for the repository, opened.
async fn setup_secrets(
    cache: &EnvironmentCache,
    task: &Task,
    ctx: &Context,
) -> Result<Vec<(String, String)>, Ending> {
    let sealed = ctx
        .store
        .list_setup_secrets(task.owner_id, &task.repo_url)
        .await?;
    if sealed.is_empty() {
        return Ok(Vec::new());
    }
    let Some(keyring) = cache.keyring.as_ref() else {
        return Err(Ending::Failed(
            "the repository has setup secrets but this runner has no encryption_key to open them"
                .into(),
        ));
    };
    sealed
        .into_iter()
        .map(|secret| {
            let value = keyring.open(&secret.sealed).map_err(|err| {
                Ending::Failed(format!(
                    "the setup secret {} cannot be opened: {err}",
                    secret.name
                ))
            })?;
            Ok((secret.name, value))
        })
        .collect()
}
/// The reason a failed setup gives: its exit and the end of its output (all of which is in
/// the task's events too).
fn setup_failure(ran: &ExecResult) -> String {
    const TAIL: usize = 2000;
    let mut output = String::from_utf8_lossy(&ran.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&ran.stderr));
    let output = output.trim();
    let start = output
        .char_indices()
        .map(|(at, _)| at)
        .find(|&at| output.len() - at <= TAIL)
        .unwrap_or(output.len());
    format!(
        "the environment's setup failed (exit code {}{}): {}",
        ran.exit_code.unwrap_or(-1),
        if ran.timed_out { ", timed out" } else { "" },
        &output[start..]
    )
}
