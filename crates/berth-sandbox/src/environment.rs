//! Prepared environment images: a repository's setup run once in a container from its base
//! image and committed, so that later tasks start from the result. An image is found by its
//! labels (installation and cache key); its last use is its last tag time, which a use
//! refreshes by tagging it again, and the least recently used go first when the images of an
//! installation pass their size bound.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::ContainerConfig;
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
    TagImageOptionsBuilder,
};
use bollard::Docker;

use crate::docker::Workspace;
use crate::{
    engine_error, DockerSandbox, ExecRequest, ExecResult, NetworkPolicy, Sandbox, SandboxError,
    SandboxSpec, Stream, LABEL_INSTALLATION, LABEL_KIND,
};

/// The cache key of an environment image.
pub const LABEL_ENVIRONMENT_KEY: &str = "berth.environment.key";
/// The repository it was prepared for, for people and for listing.
pub const LABEL_ENVIRONMENT_REPO: &str = "berth.environment.repo";
const KIND_ENVIRONMENT: &str = "environment";

/// One prepared image on this engine.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvironmentImage {
    /// `repository:tag`, what a sandbox is created from.
    pub image: String,
    pub key: String,
    pub repo: String,
    pub size_bytes: u64,
}

/// What to prepare.
pub struct EnvironmentBuild<'a> {
    /// Labels the build container like a task's, so the sweep removes it if the runner dies.
    pub container: SandboxSpec,
    pub key: &'a str,
    pub repo_url: &'a str,
    /// The repository's files, copied into `/workspace` for the setup.
    pub workspace: &'a Path,
    pub max_workspace_bytes: u64,
    /// `NAME=value`, for the setup and kept in the image for every later command.
    pub variables: Vec<String>,
    pub setup: Option<ExecRequest>,
}

/// How a build ended short of an error of the engine.
pub enum Built {
    Ready(EnvironmentImage),
    /// The setup exited with a failure; nothing was kept.
    SetupFailed(ExecResult),
}

/// The image's id (`sha256:…`), which changes whenever the image under a name does.
pub async fn image_id(docker: &Docker, image: &str) -> Result<String, SandboxError> {
    let inspected = docker
        .inspect_image(image)
        .await
        .map_err(|_| SandboxError::ImageMissing(image.to_string()))?;
    inspected
        .id
        .ok_or_else(|| SandboxError::Engine(format!("image {image} has no id")))
}

/// What every environment image's name starts with.
const ENVIRONMENT_IMAGE_PREFIX: &str = "berth-env-";

/// The name an environment image is tagged with.
pub fn environment_image_name(installation: &str, key: &str) -> String {
    format!(
        "{ENVIRONMENT_IMAGE_PREFIX}{}:{key}",
        installation.to_ascii_lowercase()
    )
}

/// Whether `image` is a prepared environment, whose `/workspace` holds what its setup made.
pub fn is_environment_image(image: &str) -> bool {
    image.starts_with(ENVIRONMENT_IMAGE_PREFIX)
}

/// This installation's prepared images, most recently used first.
pub async fn environment_images(
    docker: &Docker,
    installation: &str,
) -> Result<Vec<EnvironmentImage>, SandboxError> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{LABEL_INSTALLATION}={installation}"),
            format!("{LABEL_KIND}={KIND_ENVIRONMENT}"),
        ],
    )]);
    let options = ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let listed = docker
        .list_images(Some(options))
        .await
        .map_err(engine_error)?;
    let mut found = Vec::new();
    for summary in listed {
        let Some(key) = summary.labels.get(LABEL_ENVIRONMENT_KEY) else {
            continue;
        };
        let image = environment_image_name(installation, key);
        let last_used = docker
            .inspect_image(&image)
            .await
            .ok()
            .and_then(|inspected| inspected.metadata)
            .and_then(|metadata| metadata.last_tag_time);
        let repo = summary.labels.get(LABEL_ENVIRONMENT_REPO).cloned();
        let entry = EnvironmentImage {
            image,
            key: key.clone(),
            repo: repo.unwrap_or_default(),
            size_bytes: summary.size.max(0) as u64,
        };
        found.push((last_used, entry));
    }
    found.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(found.into_iter().map(|(_, entry)| entry).collect())
}

/// Marks an image used now, by tagging it again (which sets its last tag time).
pub async fn touch_environment(docker: &Docker, image: &str) -> Result<(), SandboxError> {
    let (repo, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
    let options = TagImageOptionsBuilder::default()
        .repo(repo)
        .tag(tag)
        .build();
    docker
        .tag_image(image, Some(options))
        .await
        .map_err(engine_error)
}

/// Removes this installation's least recently used images until the rest fit in `max_bytes`;
/// `keep` (the one just built or used) is never removed. Returns the removed ones. An image a
/// running container still uses cannot be removed and is left for a later pass.
pub async fn evict_environments(
    docker: &Docker,
    installation: &str,
    max_bytes: u64,
    keep: &str,
) -> Result<Vec<EnvironmentImage>, SandboxError> {
    let images = environment_images(docker, installation).await?;
    let mut total: u64 = images.iter().map(|image| image.size_bytes).sum();
    let mut removed = Vec::new();
    for image in images.into_iter().rev() {
        if total <= max_bytes {
            break;
        }
        if image.image == keep {
            continue;
        }
        match remove_environment(docker, &image.image).await {
            Ok(()) => {
                total = total.saturating_sub(image.size_bytes);
                removed.push(image);
            }
            Err(err) => tracing::info!(image = %image.image, error = %err, "not evicted"),
        }
    }
    Ok(removed)
}

/// Removes one prepared image, so that the next task that needs it prepares it again.
pub async fn remove_environment(docker: &Docker, image: &str) -> Result<(), SandboxError> {
    let options = RemoveImageOptionsBuilder::default().build();
    docker
        .remove_image(image, Some(options), None)
        .await
        .map(|_| ())
        .map_err(engine_error)
}

/// Runs the setup in a fresh container from the base image (`build.container.image`) with the
/// repository copied in, and commits the result. The repository's tracked files and `.git`
/// are removed before the commit: each task copies its own fresh checkout over what is left,
/// which is what the setup made in `/workspace` (`node_modules`, `target`, a virtualenv) and
/// everything it made outside it.
pub async fn build_environment(
    docker: &Docker,
    build: EnvironmentBuild<'_>,
    on_output: &mut (dyn for<'b> FnMut(Stream, &'b [u8]) + Send),
) -> Result<Built, SandboxError> {
    // The workspace in the container's own layer: `docker commit` keeps no volume.
    let (container, variables) = (&build.container, build.variables.clone());
    let sandbox =
        DockerSandbox::create_with_env(docker, container, variables, Workspace::Layer).await?;
    let built = prepare_and_commit(docker, &sandbox, &build, on_output).await;
    if let Err(err) = sandbox.destroy().await {
        tracing::warn!(error = %err, "removing the environment's build container failed; the sweep will");
    }
    built
}

async fn prepare_and_commit(
    docker: &Docker,
    sandbox: &DockerSandbox,
    build: &EnvironmentBuild<'_>,
    on_output: &mut (dyn for<'b> FnMut(Stream, &'b [u8]) + Send),
) -> Result<Built, SandboxError> {
    sandbox
        .copy_in(build.workspace, build.max_workspace_bytes)
        .await?;
    if let Some(setup) = &build.setup {
        sandbox.set_network(NetworkPolicy::Full).await?;
        let ran = sandbox.exec(setup, on_output).await?;
        if ran.exit_code != Some(0) {
            return Ok(Built::SetupFailed(ran));
        }
    }
    let clear = ExecRequest::new(
        "git ls-files -z | xargs -0 rm -f -- && rm -rf .git && find . -type d -empty -delete",
    );
    let cleared = sandbox.exec(&clear, &mut |_, _| {}).await?;
    if cleared.exit_code != Some(0) {
        return Err(SandboxError::Other(format!(
            "clearing the workspace before keeping the environment failed: {}",
            String::from_utf8_lossy(&cleared.stderr).trim()
        )));
    }
    let installation = &build.container.installation;
    let name = environment_image_name(installation, build.key);
    let (repo, tag) = name.rsplit_once(':').expect("the name has a tag");
    let options = CommitContainerOptionsBuilder::default()
        .container(sandbox.id())
        .repo(repo)
        .tag(tag)
        .comment("a Berth environment: the repository's setup, done")
        .build();
    let labels = HashMap::from([
        (LABEL_INSTALLATION.to_string(), installation.clone()),
        (LABEL_KIND.to_string(), KIND_ENVIRONMENT.to_string()),
        (LABEL_ENVIRONMENT_KEY.to_string(), build.key.to_string()),
        (
            LABEL_ENVIRONMENT_REPO.to_string(),
            build.repo_url.to_string(),
        ),
    ]);
    let config = ContainerConfig {
        labels: Some(labels),
        ..Default::default()
    };
    docker
        .commit_container(options, config)
        .await
        .map_err(engine_error)?;
    let size_bytes = docker
        .inspect_image(&name)
        .await
        .map_err(engine_error)?
        .size
        .unwrap_or(0)
        .max(0) as u64;
    Ok(Built::Ready(EnvironmentImage {
        image: name,
        key: build.key.to_string(),
        repo: build.repo_url.to_string(),
        size_bytes,
    }))
}
