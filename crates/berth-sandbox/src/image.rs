//! The default sandbox image, `berth-sandbox`, built on this machine with no registry needed:
//! a minimal Debian root filesystem bootstrapped from the mirror the host's apt configuration
//! names, given a non-root user, and loaded into the engine as a one-layer image.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, ImportImageOptionsBuilder,
    TagImageOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{engine_error, SandboxError};

pub const DEFAULT_IMAGE: &str = "berth-sandbox";
/// Packages beyond Debian's minimal base: what the agent needs to work on a repository, and
/// `iptables`, with which a root helper container fences the egress network on the host (the
/// agent, with no capabilities, can use it for nothing).
const PACKAGES: &str =
    "git,ca-certificates,bash,coreutils,findutils,grep,sed,diffutils,patch,procps,less,iptables";
/// Raised whenever what goes into the image changes, so that a machine holding an image of
/// the same Berth version but older contents builds the new one.
const IMAGE_REVISION: u32 = 2;
pub const SANDBOX_UID: u32 = 1000;

/// `berth-sandbox:<version>-r<revision>`: the tag this build of Berth uses.
pub fn default_image() -> String {
    format!(
        "{DEFAULT_IMAGE}:{}-r{IMAGE_REVISION}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Builds the default image unless this version of it is already there. `progress` gets one
/// line per step.
pub async fn ensure_default_image(
    docker: &Docker,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), SandboxError> {
    if docker.inspect_image(&default_image()).await.is_ok() {
        progress(&format!("{} is already built", default_image()));
        return tag_latest(docker).await;
    }
    build_default_image(docker, progress).await
}

/// Builds the default image from scratch and tags it with this version and `latest`: from a
/// Dockerfile on Debian's slim image when a registry can be reached, and otherwise by
/// bootstrapping Debian from the host's mirror.
pub async fn build_default_image(
    docker: &Docker,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), SandboxError> {
    let source = AptSource::from_host()?;
    let base = format!("debian:{}-slim", source.suite);
    if pull(docker, &base).await {
        progress(&format!(
            "a registry answered; building from a Dockerfile on {base}"
        ));
        build_from_dockerfile(docker, &base, progress).await?;
        tag_latest(docker).await?;
        progress(&format!("built {} (and :latest)", default_image()));
        return Ok(());
    }
    progress(&format!(
        "no registry reachable; bootstrapping Debian {} from {}",
        source.suite, source.mirror
    ));
    let work = tempfile::Builder::new()
        .prefix("berth-image-")
        .tempdir_in(scratch_dir())?;
    let rootfs = work.path().join("rootfs");
    debootstrap(&source, &rootfs, progress).await?;
    progress("adding the non-root user `berth` and /workspace");
    prepare_rootfs(&rootfs)?;
    progress("packing the root filesystem");
    let layer = work.path().join("layer.tar");
    run_quiet("tar", &tar_rootfs_args(&rootfs, &layer)).await?;
    let archive = work.path().join("image.tar");
    let image_archive = archive.clone();
    tokio::task::spawn_blocking(move || write_image_archive(&layer, &image_archive))
        .await
        .map_err(|err| SandboxError::Other(err.to_string()))??;
    progress(&format!(
        "loading {} into the Docker engine",
        default_image()
    ));
    load_archive(docker, &archive).await?;
    tag_latest(docker).await?;
    progress(&format!("built {} (and :latest)", default_image()));
    Ok(())
}

/// Pulls `image`; false when no registry answers (as on machines that reach none).
async fn pull(docker: &Docker, image: &str) -> bool {
    let options = CreateImageOptionsBuilder::default()
        .from_image(image)
        .build();
    let mut stream = docker.create_image(Some(options), None, None);
    let pulling = async {
        while let Some(step) = stream.next().await {
            if step.is_err() {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(std::time::Duration::from_secs(300), pulling)
        .await
        .unwrap_or(false)
}

/// The same image as the bootstrap makes, from a Dockerfile.
fn dockerfile(base: &str) -> String {
    let packages = PACKAGES.replace(',', " ");
    format!(
        "FROM {base}\n\
         RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
         {packages} && rm -rf /var/lib/apt/lists/*\n\
         RUN useradd --uid {SANDBOX_UID} --user-group --create-home --shell /bin/bash berth \
         && mkdir /workspace && chown berth:berth /workspace \
         && printf '[user]\\n\\tname = Berth\\n\\temail = berth@localhost\\n[safe]\\n\\tdirectory = /workspace\\n' \
         > /home/berth/.gitconfig && chown berth:berth /home/berth/.gitconfig\n\
         USER {SANDBOX_UID}:{SANDBOX_UID}\n\
         WORKDIR /workspace\n\
         ENV HOME=/home/berth LANG=C.UTF-8\n\
         LABEL berth.image=default\n\
         CMD [\"sleep\", \"infinity\"]\n"
    )
}

async fn build_from_dockerfile(
    docker: &Docker,
    base: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), SandboxError> {
    let mut context = tar::Builder::new(Vec::new());
    let text = dockerfile(base);
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    context.append_data(&mut header, "Dockerfile", text.as_bytes())?;
    let context = context.into_inner()?;
    let options = BuildImageOptionsBuilder::default()
        .t(&default_image())
        .rm(true)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(step) = stream.next().await {
        let info = step.map_err(engine_error)?;
        if let Some(line) = info
            .stream
            .as_deref()
            .map(str::trim)
            .filter(|line| line.starts_with("Step"))
        {
            progress(line);
        }
    }
    Ok(())
}

/// Large temporary trees go where there is room: `BERTH_IMAGE_WORKDIR`, else /var/tmp.
fn scratch_dir() -> PathBuf {
    std::env::var_os("BERTH_IMAGE_WORKDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/tmp".into())
}

async fn tag_latest(docker: &Docker) -> Result<(), SandboxError> {
    let options = TagImageOptionsBuilder::default()
        .repo(DEFAULT_IMAGE)
        .tag("latest")
        .build();
    docker
        .tag_image(&default_image(), Some(options))
        .await
        .map_err(engine_error)
}

/// The Debian mirror and suite of the host's apt configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AptSource {
    pub mirror: String,
    pub suite: String,
}

impl AptSource {
    pub fn from_host() -> Result<Self, SandboxError> {
        let mut texts = Vec::new();
        if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
            for entry in entries.flatten() {
                if entry
                    .path()
                    .extension()
                    .is_some_and(|ext| ext == "sources" || ext == "list")
                {
                    texts.push(std::fs::read_to_string(entry.path()).unwrap_or_default());
                }
            }
        }
        texts.push(std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
        texts
            .iter()
            .find_map(|text| Self::parse(text))
            .ok_or_else(|| {
                SandboxError::Other(
                "cannot find a Debian mirror in /etc/apt/sources.list(.d); the sandbox image is \
                 bootstrapped from the host's configured mirror"
                    .into(),
            )
            })
    }

    /// The first Debian archive (not security or updates) in deb822 or one-line form.
    pub fn parse(text: &str) -> Option<Self> {
        let usable = |mirror: &str, suite: &str| {
            mirror.starts_with("http") && !mirror.contains("security") && !suite.contains('-')
        };
        // deb822: blocks of `Key: value` lines.
        for block in text.split("\n\n") {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|line| line.strip_prefix(name).map(|rest| rest.trim().to_string()))
            };
            let (Some(types), Some(uris), Some(suites)) =
                (field("Types:"), field("URIs:"), field("Suites:"))
            else {
                continue;
            };
            let (Some(mirror), Some(suite)) = (
                uris.split_whitespace().next(),
                suites.split_whitespace().next(),
            ) else {
                continue;
            };
            if types.split_whitespace().any(|t| t == "deb") && usable(mirror, suite) {
                return Some(Self {
                    mirror: mirror.to_string(),
                    suite: suite.to_string(),
                });
            }
        }
        // One-line: `deb [options] URI SUITE COMPONENTS`.
        text.lines().find_map(|line| {
            let mut words = line
                .split_whitespace()
                .filter(|word| !word.starts_with('['));
            (words.next()? == "deb").then_some(())?;
            let (mirror, suite) = (words.next()?, words.next()?);
            usable(mirror, suite).then(|| Self {
                mirror: mirror.to_string(),
                suite: suite.to_string(),
            })
        })
    }
}

async fn debootstrap(
    source: &AptSource,
    rootfs: &Path,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), SandboxError> {
    let mut child = tokio::process::Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={PACKAGES}"),
            &source.suite,
        ])
        .arg(rootfs)
        .arg(&source.mirror)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => SandboxError::Other(
                "debootstrap is not installed: `apt-get install debootstrap` (it builds the \
                 sandbox image without a registry)"
                    .into(),
            ),
            _ => SandboxError::Other(format!("cannot run debootstrap: {err}")),
        })?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        // One line per package is too much; keep the stages.
        let per_package = [
            "I: Retrieving ",
            "I: Validating ",
            "I: Extracting ",
            "I: Unpacking ",
            "I: Configuring ",
        ]
        .iter()
        .any(|verb| line.starts_with(verb))
            && !line.contains("Release")
            && !line.contains("base system");
        if !per_package {
            progress(&format!("debootstrap: {line}"));
        }
    }
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(SandboxError::Other(format!(
            "debootstrap failed: {}",
            stderr.trim()
        )));
    }
    Ok(())
}

/// Adds the `berth` user (uid 1000) and `/workspace`, and drops what an image does not need.
fn prepare_rootfs(rootfs: &Path) -> Result<(), SandboxError> {
    let append = |file: &str, line: &str| -> std::io::Result<()> {
        use std::io::Write;
        let mut handle = std::fs::OpenOptions::new()
            .append(true)
            .open(rootfs.join(file))?;
        writeln!(handle, "{line}")
    };
    append(
        "etc/passwd",
        "berth:x:1000:1000:Berth agent:/home/berth:/bin/bash",
    )?;
    append("etc/group", "berth:x:1000:")?;
    append("etc/shadow", "berth:!:19000:0:99999:7:::")?;
    for dir in ["home/berth", "workspace"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
        std::os::unix::fs::chown(rootfs.join(dir), Some(SANDBOX_UID), Some(SANDBOX_UID))?;
    }
    std::fs::write(
        rootfs.join("home/berth/.gitconfig"),
        "[user]\n\tname = Berth\n\temail = berth@localhost\n[safe]\n\tdirectory = /workspace\n",
    )?;
    std::os::unix::fs::chown(
        rootfs.join("home/berth/.gitconfig"),
        Some(SANDBOX_UID),
        Some(SANDBOX_UID),
    )?;
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        if let Ok(entries) = std::fs::read_dir(rootfs.join(dir)) {
            for entry in entries.flatten() {
                if entry.path().is_file() {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
    Ok(())
}

fn tar_rootfs_args(rootfs: &Path, output: &Path) -> Vec<String> {
    vec![
        "-C".into(),
        rootfs.display().to_string(),
        "--numeric-owner".into(),
        "--exclude=./dev/*".into(),
        "--exclude=./proc/*".into(),
        "--exclude=./sys/*".into(),
        "-cf".into(),
        output.display().to_string(),
        ".".into(),
    ]
}

async fn run_quiet(program: &str, args: &[String]) -> Result<(), SandboxError> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(SandboxError::Other(format!(
            "{program} failed: {}",
            stderr.trim()
        )));
    }
    Ok(())
}

/// Writes an archive in the form `docker save` makes: a manifest, an image config (user,
/// working directory, command) and the one layer.
fn write_image_archive(layer: &Path, archive: &Path) -> Result<(), SandboxError> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(layer)?, &mut hasher)?;
    let diff_id = format!("{:x}", hasher.finalize());
    let config = serde_json::json!({
        "architecture": docker_arch(),
        "os": "linux",
        "config": {
            "User": "1000:1000",
            "WorkingDir": "/workspace",
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME=/home/berth", "LANG=C.UTF-8"],
            "Cmd": ["sleep", "infinity"],
            "Labels": { "berth.image": "default" },
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
        "history": [{ "created_by": "berth image build (debootstrap)" }],
    });
    let config = serde_json::to_vec(&config).expect("config serialises");
    let config_name = format!("{:x}.json", Sha256::digest(&config));
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [default_image()],
        "Layers": [format!("{diff_id}/layer.tar")],
    }]);
    let mut builder = tar::Builder::new(std::fs::File::create(archive)?);
    append_bytes(&mut builder, &config_name, &config)?;
    append_bytes(
        &mut builder,
        "manifest.json",
        &serde_json::to_vec(&manifest).expect("json"),
    )?;
    builder.append_path_with_name(layer, format!("{diff_id}/layer.tar"))?;
    builder.finish()?;
    Ok(())
}

fn append_bytes(
    builder: &mut tar::Builder<std::fs::File>,
    name: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, name, bytes)
}

fn docker_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

async fn load_archive(docker: &Docker, archive: &Path) -> Result<(), SandboxError> {
    let file = tokio::fs::File::open(archive).await?;
    let body =
        tokio_util::io::ReaderStream::new(file).filter_map(|chunk| async move { chunk.ok() });
    let options = ImportImageOptionsBuilder::default().quiet(true).build();
    let mut stream = docker.import_image(options, bollard::body_stream(body), None);
    while let Some(result) = stream.next().await {
        result.map_err(engine_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dockerfile_makes_the_same_image() {
        let text = dockerfile("debian:bookworm-slim");
        assert!(text.starts_with("FROM debian:bookworm-slim\n"));
        assert!(text.contains("git ca-certificates bash"));
        assert!(text.contains("useradd --uid 1000"));
        assert!(text.contains("USER 1000:1000\nWORKDIR /workspace\n"));
    }

    #[test]
    fn reads_deb822_and_one_line_sources() {
        let deb822 =
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\
                      Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n\
                      Suites: bookworm-security\n";
        let source = AptSource::parse(deb822).unwrap();
        assert_eq!(
            source,
            AptSource {
                mirror: "http://mirror.example/debian".into(),
                suite: "bookworm".into()
            }
        );
        let one_line = "# comment\ndeb [arch=amd64] http://mirror.example/debian trixie main\n";
        assert_eq!(AptSource::parse(one_line).unwrap().suite, "trixie");
        assert_eq!(
            AptSource::parse("deb-src http://x/debian bookworm main"),
            None
        );
    }
}
