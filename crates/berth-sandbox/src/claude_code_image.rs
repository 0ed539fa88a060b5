//! A variant of a sandbox image with Claude Code in it: the CLI is taken from the Linux wheel
//! of `claude-agent-sdk` (PyPI ships it there as one executable) and added on top of the
//! image as `/usr/local/bin/claude`, so no registry, npm or Node install is needed.

use std::io::{Read, Write};
use std::path::Path;

use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;

use crate::{engine_error, SandboxError};

/// The image's name; its tag is the base image's.
pub const CLAUDE_CODE_IMAGE: &str = "berth-sandbox-claude-code";
const BUNDLED: &str = "claude_agent_sdk/_bundled/claude";

/// `berth-sandbox-claude-code:<version>`: the tag this build of Berth uses.
pub fn claude_code_image() -> String {
    format!("{CLAUDE_CODE_IMAGE}:{}", env!("CARGO_PKG_VERSION"))
}

/// Builds [`claude_code_image`] from `base` and the CLI in `wheel`; returns the CLI's version.
pub async fn build_claude_code_image(
    docker: &Docker,
    base: &str,
    wheel: &Path,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<String, SandboxError> {
    progress(&format!(
        "taking the Claude Code CLI out of {}",
        wheel.display()
    ));
    let wheel = wheel.to_path_buf();
    let base_image = base.to_string();
    let (context, version) =
        tokio::task::spawn_blocking(move || build_context(&wheel, &base_image))
            .await
            .map_err(|err| SandboxError::Other(err.to_string()))??;
    progress(&format!("adding Claude Code {version} to {base}"));
    let file = tokio::fs::File::from_std(context.reopen()?);
    let body = tokio_util::io::ReaderStream::new(file);
    let options = BuildImageOptionsBuilder::default()
        .t(&claude_code_image())
        .rm(true)
        .build();
    let mut steps = docker.build_image(options, None, Some(bollard::body_try_stream(body)));
    while let Some(step) = steps.next().await {
        let info = step.map_err(engine_error)?;
        if let Some(error) = info.error {
            return Err(SandboxError::Other(format!(
                "building the image failed: {error}"
            )));
        }
    }
    progress(&format!("built {}", claude_code_image()));
    Ok(version)
}

/// A build context (a tar file on disk: the CLI is hundreds of MB) holding the CLI and a
/// Dockerfile that copies it onto `base`.
fn build_context(
    wheel: &Path,
    base: &str,
) -> Result<(tempfile::NamedTempFile, String), SandboxError> {
    let not_a_wheel = |err: zip::result::ZipError| {
        SandboxError::Other(format!(
            "{} is not a claude-agent-sdk wheel for Linux: {err}",
            wheel.display()
        ))
    };
    let mut archive = zip::ZipArchive::new(std::fs::File::open(wheel)?).map_err(not_a_wheel)?;
    let mut version = String::new();
    archive
        .by_name(&format!("{BUNDLED}.version"))
        .map_err(not_a_wheel)?
        .read_to_string(&mut version)?;
    let version = version.trim().to_string();
    let mut cli = archive.by_name(BUNDLED).map_err(not_a_wheel)?;
    let context = tempfile::NamedTempFile::new_in(std::env::temp_dir())?;
    let mut tar = tar::Builder::new(context.reopen()?);
    let dockerfile = format!(
        "FROM {base}\nCOPY claude /usr/local/bin/claude\nLABEL berth.claude-code=\"{version}\"\n"
    );
    append(
        &mut tar,
        "Dockerfile",
        0o644,
        dockerfile.len() as u64,
        dockerfile.as_bytes(),
    )?;
    append(&mut tar, "claude", 0o755, cli.size(), &mut cli)?;
    tar.into_inner()?.flush()?;
    Ok((context, version))
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    mode: u32,
    size: u64,
    data: impl Read,
) -> Result<(), SandboxError> {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(mode);
    header.set_cksum();
    tar.append_data(&mut header, name, data)?;
    Ok(())
}
