//! The Docker backend of [`Sandbox`], on bollard. Containers run the image's non-root user with
//! every capability dropped, `no-new-privileges`, memory (no swap), CPU and process limits, no
//! mount but a volume of their own for `/workspace`, and no Docker socket; labels name their
//! task, attempt and node.

mod create;

pub(crate) use create::{workspace_for, Workspace};

use std::path::Path;

use async_trait::async_trait;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerUpdateBody, HostConfig, NetworkConnectRequest,
    NetworkDisconnectRequest,
};
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

use crate::network::{
    ensure_egress_network, ensure_sandbox_network, EGRESS_NETWORK, SANDBOX_NETWORK,
};
use crate::{
    engine_error, BoundedOutput, ExecRequest, ExecResult, NetworkPolicy, Sandbox, SandboxError,
    Stream,
};

/// Marks the copy stopped at its bound, through the engine client's error.
const WORKSPACE_TOO_LARGE: &str = "the workspace is larger than its bound";
/// Largest diff read out of a container.
const MAX_DIFF_BYTES: usize = 64 << 20;
/// What a bookkeeping command left: its exit code and output, bounded.
struct Ran {
    exit_code: i64,
    stdout: Vec<u8>,
    /// Whether stdout was longer than the bound (and so was cut in the middle).
    stdout_cut: bool,
    stderr: Vec<u8>,
}

/// Connects to the local engine (`DOCKER_HOST`, else the default socket) and agrees on an API
/// version with it.
pub async fn connect() -> Result<Docker, SandboxError> {
    ready(Docker::connect_with_local_defaults().map_err(engine_error)?).await
}

/// Connects to the engine listening on a Unix socket.
pub async fn connect_at(socket: &str) -> Result<Docker, SandboxError> {
    let docker = Docker::connect_with_unix(socket, 10, bollard::API_DEFAULT_VERSION)
        .map_err(engine_error)?;
    ready(docker).await
}

async fn ready(docker: Docker) -> Result<Docker, SandboxError> {
    let docker = docker.negotiate_version().await.map_err(engine_error)?;
    docker.ping().await.map_err(engine_error)?;
    Ok(docker)
}

pub struct DockerSandbox {
    docker: Docker,
    id: String,
    memory_bytes: u64,
    pids: i64,
    /// Makes each exec's pid file name unique.
    execs: std::sync::atomic::AtomicU64,
    /// The container's OOM-kill count when it was last read: a failed command that finds it
    /// higher was killed for memory. Read only after failures, so a good exec costs one call.
    oom_seen: std::sync::atomic::AtomicU64,
    /// `NAME=value` pairs every command gets: the proxy variables while on the egress network.
    env: std::sync::Mutex<Vec<String>>,
}

impl DockerSandbox {
    /// Runs `argv` as it is (no shell, no pid file): for the sandbox's own bookkeeping.
    async fn run_raw(&self, argv: &[&str], max_output: usize) -> Result<Ran, SandboxError> {
        let options = CreateExecOptions {
            cmd: Some(argv.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            working_dir: Some("/workspace"),
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(&self.id, options)
            .await
            .map_err(engine_error)?;
        let mut stdout = BoundedOutput::new(max_output);
        let mut stderr = BoundedOutput::new(max_output);
        let started = self
            .docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: false,
                    ..Default::default()
                }),
            )
            .await
            .map_err(engine_error)?;
        if let StartExecResults::Attached { mut output, .. } = started {
            while let Some(chunk) = output.next().await {
                match chunk.map_err(engine_error)? {
                    bollard::container::LogOutput::StdOut { message } => stdout.push(&message),
                    bollard::container::LogOutput::StdErr { message } => stderr.push(&message),
                    _ => {}
                }
            }
        }
        let inspected = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(engine_error)?;
        Ok(Ran {
            exit_code: inspected.exit_code.unwrap_or(-1),
            stdout_cut: stdout.was_cut(),
            stdout: stdout.into_bytes(),
            stderr: stderr.into_bytes(),
        })
    }

    /// How many times the kernel's OOM killer has struck in this container (cgroup v1 or v2).
    async fn oom_kills(&self) -> u64 {
        let script =
            "cat /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control 2>/dev/null";
        let Ok(ran) = self.run_raw(&["sh", "-c", script], 4096).await else {
            return 0;
        };
        String::from_utf8_lossy(&ran.stdout)
            .lines()
            .find_map(|line| {
                line.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    async fn kill_group(&self, pid_file: &str) {
        // bash's own `kill`: dash's signals only the group's leader. Its exit status is the
        // kill's, so a kill that could not start (no slot for `cat`) is told apart.
        let script = format!(
            "group=$(cat {pid_file}) && kill -KILL -- \"-$group\" 2>/dev/null; done=$?; \
             rm -f {pid_file}; exit $done"
        );
        if matches!(
            self.run_raw(&["bash", "-c", &script], 4096).await,
            Ok(Ran { exit_code: 0, .. })
        ) {
            return;
        }
        // A fork bomb holds every process slot, so not even the kill can start: lift the limit
        // for a moment, kill the whole group at once, and put the limit back. The bomb races
        // the kill for the slots lifted, so each try lifts more.
        let lift = |pids| ContainerUpdateBody {
            pids_limit: Some(pids),
            ..Default::default()
        };
        for more in [64, 512, 4096] {
            if let Err(err) = self
                .docker
                .update_container(&self.id, lift(self.pids + more))
                .await
            {
                tracing::warn!(container = %self.id, error = %err, "cannot lift the process limit to kill a command");
                break;
            }
            if matches!(
                self.run_raw(&["bash", "-c", &script], 4096).await,
                Ok(Ran { exit_code: 0, .. })
            ) {
                break;
            }
        }
        if let Err(err) = self
            .docker
            .update_container(&self.id, lift(self.pids))
            .await
        {
            tracing::error!(container = %self.id, error = %err, "cannot restore the process limit");
        }
    }
}

#[async_trait]
impl Sandbox for DockerSandbox {
    fn id(&self) -> &str {
        &self.id
    }

    async fn copy_in(&self, dir: &Path, max_bytes: u64) -> Result<(), SandboxError> {
        // Its output is streamed to the engine, never held whole in memory.
        let mut tar = crate::pack_workspace(dir)?;
        let stdout = tar.stdout.take().expect("stdout is piped");
        let mut sent = 0u64;
        // The engine client wraps the stream's error in its own, so the bound being hit is
        // told by this flag rather than read back from the error's text.
        let over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let over_seen = over.clone();
        let counted = tokio_util::io::ReaderStream::new(stdout).map(move |chunk| {
            let chunk = chunk?;
            sent += chunk.len() as u64;
            if sent > max_bytes {
                over_seen.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(std::io::Error::other(WORKSPACE_TOO_LARGE));
            }
            Ok(chunk)
        });
        let options = UploadToContainerOptionsBuilder::default()
            .path("/workspace")
            .build();
        let uploaded = self
            .docker
            .upload_to_container(&self.id, Some(options), bollard::body_try_stream(counted))
            .await;
        let _ = tar.start_kill();
        let packed = tar.wait_with_output().await?;
        match uploaded {
            Err(_) if over.load(std::sync::atomic::Ordering::Relaxed) => {
                Err(SandboxError::WorkspaceTooLarge {
                    limit_mib: max_bytes >> 20,
                })
            }
            Err(err) => Err(engine_error(err)),
            Ok(()) if !packed.status.success() && packed.status.code().is_some() => {
                Err(SandboxError::Other(format!(
                    "packing the workspace failed: {}",
                    String::from_utf8_lossy(&packed.stderr).trim()
                )))
            }
            Ok(()) => Ok(()),
        }
    }

    async fn exec(
        &self,
        request: &ExecRequest,
        on_output: &mut (dyn for<'b> FnMut(Stream, &'b [u8]) + Send),
    ) -> Result<ExecResult, SandboxError> {
        let n = self
            .execs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid_file = format!("/tmp/.berth-exec-{n}");
        // A session of its own, so that a timeout kills the command and all it started.
        let wrapper = "echo $$ > \"$1\"; script=$2; shift 2; exec bash -lc \"$script\" bash \"$@\"";
        let mut argv = vec![
            "setsid",
            "-w",
            "bash",
            "-c",
            wrapper,
            "berth",
            &pid_file,
            &request.command,
        ];
        argv.extend(request.args.iter().map(String::as_str));
        // The sandbox's own (the proxy variables on the egress network), then the command's.
        let mut env = self.env.lock().expect("env lock").clone();
        env.extend((request.env.iter()).map(|(name, value)| format!("{name}={value}")));
        let options = CreateExecOptions {
            cmd: Some(argv),
            env: (!env.is_empty()).then(|| env.iter().map(String::as_str).collect()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            working_dir: Some("/workspace"),
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(&self.id, options)
            .await
            .map_err(engine_error)?;
        let started = self
            .docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: false,
                    ..Default::default()
                }),
            )
            .await
            .map_err(engine_error)?;
        let mut stdout = BoundedOutput::new(request.max_output);
        let mut stderr = BoundedOutput::new(request.max_output);
        let mut timed_out = false;
        if let StartExecResults::Attached { mut output, .. } = started {
            let deadline = tokio::time::sleep(request.timeout);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    chunk = output.next() => match chunk {
                        Some(Ok(bollard::container::LogOutput::StdOut { message })) => {
                            stdout.push(&message);
                            on_output(Stream::Stdout, &message);
                        }
                        Some(Ok(bollard::container::LogOutput::StdErr { message })) => {
                            stderr.push(&message);
                            on_output(Stream::Stderr, &message);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(err)) => return Err(engine_error(err)),
                        None => break,
                    },
                    () = &mut deadline => {
                        timed_out = true;
                        self.kill_group(&pid_file).await;
                        break;
                    }
                }
            }
        }
        let inspected = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(engine_error)?;
        let exit_code = if timed_out { None } else { inspected.exit_code };
        // `setsid -w` reports a child killed by a signal in its own way, so the kernel's OOM
        // counter, not the exit status, says whether memory ran out.
        let oom_killed = exit_code != Some(0) && {
            let now = self.oom_kills().await;
            let before = self
                .oom_seen
                .swap(now, std::sync::atomic::Ordering::Relaxed);
            now > before
        };
        let truncated = stdout.was_cut() || stderr.was_cut();
        Ok(ExecResult {
            exit_code,
            stdout: stdout.into_bytes(),
            stderr: stderr.into_bytes(),
            timed_out,
            oom_killed,
            truncated,
        })
    }

    async fn put_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        let (dir, name) = path
            .rsplit_once('/')
            .filter(|(_, name)| !name.is_empty())
            .ok_or_else(|| SandboxError::Other(format!("{path} is not a file path")))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_uid(1000);
        header.set_gid(1000);
        header.set_mtime(0);
        let mut archive = tar::Builder::new(Vec::new());
        archive.append_data(&mut header, name, contents)?;
        let archive = archive.into_inner()?;
        let dir = if dir.is_empty() { "/" } else { dir };
        let options = UploadToContainerOptionsBuilder::default().path(dir).build();
        self.docker
            .upload_to_container(&self.id, Some(options), bollard::body_full(archive.into()))
            .await
            .map_err(engine_error)
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError> {
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut stream = self.docker.download_from_container(&self.id, Some(options));
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            archive.extend_from_slice(&chunk.map_err(engine_error)?);
        }
        let mut entries = tar::Archive::new(archive.as_slice());
        let mut entry = entries
            .entries()?
            .next()
            .ok_or_else(|| SandboxError::Other(format!("{path} is empty")))??;
        let mut contents = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut contents)?;
        Ok(contents)
    }

    async fn diff(&self, base: &str) -> Result<Vec<u8>, SandboxError> {
        if base.is_empty() || !base.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SandboxError::Other(format!("{base:?} is not a commit id")));
        }
        // The repository's own configuration could swap in an external diff program or a
        // text conversion; the diff must be git's own.
        let script = "git add -A && git -c core.quotepath=off diff --cached --binary \
                      --find-renames --no-ext-diff --no-textconv \"$1\" --";
        let ran = self
            .run_raw(&["bash", "-c", script, "berth", base], MAX_DIFF_BYTES)
            .await?;
        if ran.stdout_cut {
            return Err(SandboxError::DiffTooLarge {
                limit_mib: MAX_DIFF_BYTES >> 20,
            });
        }
        if ran.exit_code != 0 {
            let err = String::from_utf8_lossy(&ran.stderr);
            return Err(SandboxError::Other(format!(
                "reading the diff failed: {}",
                err.trim()
            )));
        }
        Ok(ran.stdout)
    }

    async fn set_network(&self, policy: NetworkPolicy) -> Result<(), SandboxError> {
        let wanted = match policy {
            NetworkPolicy::None => None,
            NetworkPolicy::Full => {
                ensure_sandbox_network(&self.docker).await?;
                Some(SANDBOX_NETWORK)
            }
            NetworkPolicy::Egress { .. } => {
                ensure_egress_network(&self.docker).await?;
                Some(EGRESS_NETWORK)
            }
        };
        let connected = self.networks().await?;
        // A container made without a network is in Docker's `none` mode, which admits no
        // other network until it is left.
        if wanted.is_some() && connected.contains_key("none") {
            let request = NetworkDisconnectRequest {
                container: Some(self.id.clone()),
                force: Some(true),
            };
            (self.docker.disconnect_network("none", request).await).map_err(engine_error)?;
        }
        for name in [SANDBOX_NETWORK, EGRESS_NETWORK] {
            let here = connected.contains_key(name);
            if here && wanted != Some(name) {
                let request = NetworkDisconnectRequest {
                    container: Some(self.id.clone()),
                    force: Some(true),
                };
                (self.docker.disconnect_network(name, request).await).map_err(engine_error)?;
            } else if !here && wanted == Some(name) {
                let request = NetworkConnectRequest {
                    container: Some(self.id.clone()),
                    ..Default::default()
                };
                (self.docker.connect_network(name, request).await).map_err(engine_error)?;
            }
        }
        *self.env.lock().expect("env lock") = match policy {
            NetworkPolicy::Egress { proxy } => proxy_env(proxy),
            _ => Vec::new(),
        };
        Ok(())
    }

    async fn egress_address(&self) -> Result<Option<std::net::IpAddr>, SandboxError> {
        let networks = self.networks().await?;
        Ok(networks
            .get(EGRESS_NETWORK)
            .and_then(|endpoint| endpoint.ip_address.as_deref())
            .and_then(|ip| ip.parse().ok()))
    }

    async fn destroy(&self) -> Result<(), SandboxError> {
        crate::labels::remove_container(&self.docker, &self.id).await
    }
}

/// The variables that send HTTP(S) clients (curl, git, pip, npm, cargo) through the proxy, in
/// both the upper- and lower-case spellings tools disagree on.
fn proxy_env(proxy: std::net::SocketAddr) -> Vec<String> {
    let url = format!("http://{proxy}");
    let mut env = Vec::new();
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        env.push(format!("{name}={url}"));
        env.push(format!("{}={url}", name.to_lowercase()));
    }
    env.push("NO_PROXY=localhost,127.0.0.1,::1".into());
    env.push("no_proxy=localhost,127.0.0.1,::1".into());
    env
}

impl DockerSandbox {
    /// The networks the container is on, by name.
    async fn networks(
        &self,
    ) -> Result<std::collections::HashMap<String, bollard::models::EndpointSettings>, SandboxError>
    {
        let inspected = self
            .docker
            .inspect_container(
                &self.id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(engine_error)?;
        Ok(inspected
            .network_settings
            .and_then(|settings| settings.networks)
            .unwrap_or_default())
    }

    /// The memory limit, for reporting an out-of-memory kill.
    pub fn memory_limit(&self) -> u64 {
        self.memory_bytes
    }
}

/// Checks that an image a user named has `git` and `bash`, in a throwaway container.
pub async fn check_image(docker: &Docker, image: &str) -> Result<(), SandboxError> {
    if docker.inspect_image(image).await.is_err() {
        return Err(SandboxError::ImageMissing(image.to_string()));
    }
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec!["command -v git && command -v bash".into()]),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            cap_drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let unsuitable = |reason: &str| SandboxError::ImageUnsuitable {
        image: image.to_string(),
        reason: reason.to_string(),
    };
    match run_to_end(docker, body).await {
        Ok(ran) if ran.exit_code == 0 => Ok(()),
        Ok(_) => Err(unsuitable(
            "it needs git and bash (and /bin/sh) on its PATH",
        )),
        Err(_) => Err(unsuitable("a container cannot be created from it")),
    }
}

/// What a throwaway container did: its exit code and its output, both streams together.
pub(crate) struct RanContainer {
    pub exit_code: i64,
    pub output: String,
}

/// Runs a throwaway container made from `body` to its end and removes it.
pub(crate) async fn run_to_end(
    docker: &Docker,
    body: ContainerCreateBody,
) -> Result<RanContainer, SandboxError> {
    let image = body.image.clone().unwrap_or_default();
    let created = match docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
    {
        Ok(created) => created,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Err(SandboxError::ImageMissing(image)),
        Err(err) => return Err(engine_error(err)),
    };
    let ran = async {
        (docker.start_container(
            &created.id,
            None::<bollard::query_parameters::StartContainerOptions>,
        ))
        .await
        .map_err(engine_error)?;
        let mut waited = docker.wait_container(
            &created.id,
            None::<bollard::query_parameters::WaitContainerOptions>,
        );
        let exit_code = match waited.next().await {
            Some(Ok(response)) => response.status_code,
            // A non-zero exit arrives as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(err)) => return Err(engine_error(err)),
            None => return Err(SandboxError::Other("the container's wait ended".into())),
        };
        let options = bollard::query_parameters::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .build();
        let mut logs = docker.logs(&created.id, Some(options));
        let mut output = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        Ok(RanContainer { exit_code, output })
    }
    .await;
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    let _ = docker.remove_container(&created.id, Some(options)).await;
    ran
}
