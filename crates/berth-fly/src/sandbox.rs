//! One attempt's Fly machine as a [`Sandbox`]. Fly's exec takes an argv and a whole stdin
//! string and answers once the command has ended, so everything goes through it: files travel
//! base64-encoded in chunks, commands run as the image's sandbox user (uid 1000) under
//! `timeout`, and output is handed on when the command ends rather than as it comes.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use berth_sandbox::{
    BoundedOutput, ExecRequest, ExecResult, NetworkPolicy, Sandbox, SandboxError, Stream,
};
use tokio::io::AsyncReadExt;

use crate::api::{ExecCommand, ExecOutput, MachinesClient};
use crate::backend::{api_error, NETWORK_NONE_REFUSED};

/// Raw bytes per exec when sending a file: about 700 KiB once base64-encoded, so that a large
/// workspace takes tens of calls, not thousands, while no one request grows huge.
const CHUNK_BYTES: usize = 512 << 10;
/// Largest diff read out of a machine.
const MAX_DIFF_BYTES: u64 = 64 << 20;
/// Exit status of the diff script when the change is over the bound.
const DIFF_TOO_LARGE: i64 = 3;
/// Timeout of the backend's own short commands (file transfers, counters).
const BOOKKEEPING: Duration = Duration::from_secs(120);
/// Where root keeps files on their way in, out of the sandbox user's reach.
const STAGING: &str = "/run/berth";

/// Runs `$3…` as the sandbox user in `/workspace`, in a process group that `timeout` kills
/// whole (`$2` seconds, then KILL 5 seconds on), with at most `$1` processes of that user.
/// Fly runs exec as root; dropping to uid 1000 keeps the sandbox's rules the Docker backend's.
const AS_SANDBOX_USER: &str = "ulimit -u \"$1\"; secs=$2; shift 2; cd /workspace || exit 125; \
    exec setpriv --reuid=1000 --regid=1000 --clear-groups --no-new-privs \
    env HOME=/home/berth USER=berth LOGNAME=berth timeout -k 5 \"$secs\" \"$@\"";

/// One attempt's machine.
pub struct FlySandbox {
    client: Arc<MachinesClient>,
    id: String,
    pids: i64,
    /// Makes each upload's staging name unique.
    uploads: AtomicU64,
    /// The kernel's OOM-kill count when last read (see [`FlySandbox::oom_kills`]).
    oom_seen: AtomicU64,
}

impl FlySandbox {
    /// The sandbox of a machine just made, whose commands may run `pids` processes.
    pub(crate) fn new(client: Arc<MachinesClient>, id: String, pids: i64) -> Self {
        Self {
            client,
            id,
            pids,
            uploads: AtomicU64::new(0),
            oom_seen: AtomicU64::new(0),
        }
    }

    /// Reads the OOM-kill count as it is before any command: later kills count from here.
    pub(crate) async fn note_oom_kills(&self) -> Result<(), SandboxError> {
        let kills = self.oom_kills().await?;
        self.oom_seen.store(kills, Ordering::Relaxed);
        Ok(())
    }

    /// Runs `argv` as root, as Fly's exec does, for the backend's own bookkeeping.
    async fn run_root(
        &self,
        argv: &[&str],
        stdin: Option<String>,
    ) -> Result<ExecOutput, SandboxError> {
        let command = ExecCommand {
            command: argv.iter().map(|arg| arg.to_string()).collect(),
            stdin,
            timeout: BOOKKEEPING.as_secs(),
        };
        self.client
            .exec(&self.id, &command)
            .await
            .map_err(api_error)
    }

    /// Like [`FlySandbox::run_root`], and a failure is an error that says what failed.
    async fn run_root_ok(
        &self,
        what: &str,
        argv: &[&str],
        stdin: Option<String>,
    ) -> Result<String, SandboxError> {
        let ran = self.run_root(argv, stdin).await?;
        if exit_code_of(&ran) != 0 {
            return Err(SandboxError::Other(format!(
                "{what} failed: {}",
                ran.stderr.unwrap_or_default().trim()
            )));
        }
        Ok(ran.stdout.unwrap_or_default())
    }

    /// Puts `data` in a new root-only staging file and returns its path.
    async fn stage(&self, data: &[u8]) -> Result<String, SandboxError> {
        let n = self.uploads.fetch_add(1, Ordering::Relaxed);
        let path = format!("{STAGING}/upload-{n}");
        let first = "umask 077 && mkdir -p \"$2\" && base64 -d > \"$1\"";
        let more = "base64 -d >> \"$1\"";
        let mut chunks = data.chunks(CHUNK_BYTES).peekable();
        // An empty file still needs its first (empty) chunk.
        let empty: &[u8] = &[];
        if chunks.peek().is_none() {
            self.send_chunk(first, &path, empty).await?;
        }
        for (i, chunk) in chunks.enumerate() {
            self.send_chunk(if i == 0 { first } else { more }, &path, chunk)
                .await?;
        }
        Ok(path)
    }

    async fn send_chunk(&self, script: &str, path: &str, chunk: &[u8]) -> Result<(), SandboxError> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(chunk);
        self.run_root_ok(
            "sending a file",
            &["sh", "-c", script, "berth", path, STAGING],
            Some(encoded),
        )
        .await
        .map(drop)
    }

    /// How many times the kernel's OOM killer has struck: the machine's (or container's)
    /// memory cgroup when it has one, else the kernel's count, which in a VM is the machine's.
    async fn oom_kills(&self) -> Result<u64, SandboxError> {
        let script = "cat /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control \
                      2>/dev/null; grep '^oom_kill ' /proc/vmstat; true";
        let out = self
            .run_root_ok("reading the OOM count", &["sh", "-c", script], None)
            .await?;
        Ok(out
            .lines()
            .find_map(|line| {
                line.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0))
    }

    /// Runs a script as the sandbox user, with all its output.
    async fn run_as_user(&self, request: &ExecRequest) -> Result<(ExecOutput, bool), SandboxError> {
        let secs = request.timeout.as_secs().max(1);
        let (pids, secs_text) = (self.pids.to_string(), secs.to_string());
        let mut argv = vec![
            "bash",
            "-c",
            AS_SANDBOX_USER,
            "berth",
            &pids,
            &secs_text,
            "bash",
            "-lc",
            &request.command,
            "bash",
        ];
        argv.extend(request.args.iter().map(String::as_str));
        let command = ExecCommand {
            command: argv.iter().map(|arg| arg.to_string()).collect(),
            stdin: None,
            // `timeout` in the machine ends the command; Fly's own only if that fails.
            timeout: secs + 30,
        };
        let started = Instant::now();
        let ran = self
            .client
            .exec(&self.id, &command)
            .await
            .map_err(api_error)?;
        // `timeout` exits 124 when it stopped the command, 137 when it had to kill it.
        let timed_out =
            started.elapsed() >= request.timeout && matches!(exit_code_of(&ran), 124 | 137);
        Ok((ran, timed_out))
    }
}

/// The exit status as a shell reports it: a signal's number above 128. Fly leaves out fields
/// that are zero, so an answer with neither a code nor a signal is a success.
fn exit_code_of(ran: &ExecOutput) -> i64 {
    match (ran.exit_code, ran.exit_signal) {
        (Some(code), _) if code != 0 => code,
        (_, Some(signal)) if signal != 0 => 128 + signal,
        _ => 0,
    }
}

#[async_trait]
impl Sandbox for FlySandbox {
    fn id(&self) -> &str {
        &self.id
    }

    async fn copy_in(&self, dir: &Path, max_bytes: u64) -> Result<(), SandboxError> {
        let archive = pack(dir, max_bytes).await?;
        let staged = self.stage(&archive).await?;
        // Root unpacks, so the archive's owner (the sandbox user, set when packing) is kept.
        let script = "tar -xf \"$1\" -C /workspace; status=$?; rm -f \"$1\"; exit $status";
        self.run_root_ok(
            "unpacking the workspace",
            &["sh", "-c", script, "berth", &staged],
            None,
        )
        .await
        .map(drop)
    }

    async fn exec(
        &self,
        request: &ExecRequest,
        on_output: &mut (dyn for<'b> FnMut(Stream, &'b [u8]) + Send),
    ) -> Result<ExecResult, SandboxError> {
        let (ran, timed_out) = self.run_as_user(request).await?;
        let mut stdout = BoundedOutput::new(request.max_output);
        let mut stderr = BoundedOutput::new(request.max_output);
        // Fly answers with the whole output at the end, so it is passed on then, in one go.
        for (stream, text, bounded) in [
            (Stream::Stdout, &ran.stdout, &mut stdout),
            (Stream::Stderr, &ran.stderr, &mut stderr),
        ] {
            let bytes = text.as_deref().unwrap_or_default().as_bytes();
            if !bytes.is_empty() {
                bounded.push(bytes);
                on_output(stream, bytes);
            }
        }
        let exit_code = (!timed_out).then(|| exit_code_of(&ran));
        let oom_killed = !timed_out && exit_code != Some(0) && {
            let now = self.oom_kills().await?;
            now > self.oom_seen.swap(now, Ordering::Relaxed)
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
        if !path.starts_with('/') || path.ends_with('/') {
            return Err(SandboxError::Other(format!("{path} is not a file path")));
        }
        let staged = self.stage(contents).await?;
        // Root reads the staged file; the sandbox user writes the new one, so it is theirs and
        // a link planted at `path` leads nowhere the sandbox user could not write anyway.
        let script = "setpriv --reuid=1000 --regid=1000 --clear-groups --no-new-privs \
                      sh -c 'umask 022; rm -f -- \"$1\"; cat > \"$1\"' berth \"$2\" < \"$1\"; \
                      status=$?; rm -f \"$1\"; exit $status";
        self.run_root_ok(
            "writing a file",
            &["sh", "-c", script, "berth", &staged, path],
            None,
        )
        .await
        .map(drop)
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError> {
        let encoded = self
            .run_root_ok("reading a file", &["base64", "-w0", "--", path], None)
            .await?;
        decode(&encoded)
    }

    async fn diff(&self, base: &str) -> Result<Vec<u8>, SandboxError> {
        if base.is_empty() || !base.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SandboxError::Other(format!("{base:?} is not a commit id")));
        }
        // git's own diff (no external program or text conversion the repository configured),
        // sized in the machine before it is sent, and base64 because exec answers in text.
        let script = "set -e; out=$(mktemp); git add -A; \
            git -c core.quotepath=off diff --cached --binary --find-renames --no-ext-diff \
            --no-textconv \"$1\" -- > \"$out\"; \
            if [ \"$(stat -c %s \"$out\")\" -gt \"$2\" ]; then rm -f \"$out\"; exit 3; fi; \
            base64 -w0 \"$out\"; rm -f \"$out\"";
        let limit = MAX_DIFF_BYTES.to_string();
        let request = ExecRequest {
            args: vec![base.to_string(), limit],
            timeout: BOOKKEEPING,
            max_output: usize::MAX,
            ..ExecRequest::new(script)
        };
        let (ran, _) = self.run_as_user(&request).await?;
        match exit_code_of(&ran) {
            0 => decode(ran.stdout.as_deref().unwrap_or_default()),
            DIFF_TOO_LARGE => Err(SandboxError::DiffTooLarge {
                limit_mib: (MAX_DIFF_BYTES >> 20) as usize,
            }),
            _ => Err(SandboxError::Other(format!(
                "reading the diff failed: {}",
                ran.stderr.unwrap_or_default().trim()
            ))),
        }
    }

    async fn set_network(&self, policy: NetworkPolicy) -> Result<(), SandboxError> {
        match policy {
            NetworkPolicy::Full => Ok(()),
            NetworkPolicy::None => Err(SandboxError::Other(NETWORK_NONE_REFUSED.to_string())),
            NetworkPolicy::Egress { .. } => Err(SandboxError::Other(
                crate::backend::NETWORK_ALLOWLIST_REFUSED.to_string(),
            )),
        }
    }

    async fn destroy(&self) -> Result<(), SandboxError> {
        match self.client.destroy(&self.id).await {
            Err(err) if err.is_not_found() => Ok(()),
            other => other.map_err(api_error),
        }
    }
}

fn decode(encoded: &str) -> Result<Vec<u8>, SandboxError> {
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|err| SandboxError::Other(format!("the machine's answer is not base64: {err}")))
}

/// The directory as a tar archive owned by the sandbox user, refused once over `max_bytes`.
async fn pack(dir: &Path, max_bytes: u64) -> Result<Vec<u8>, SandboxError> {
    let mut tar = berth_sandbox::pack_workspace(dir)?;
    let stdout = tar.stdout.take().expect("stdout is piped");
    let mut archive = Vec::new();
    // One byte past the bound is enough to know it is too large.
    stdout.take(max_bytes + 1).read_to_end(&mut archive).await?;
    if archive.len() as u64 > max_bytes {
        return Err(SandboxError::WorkspaceTooLarge {
            limit_mib: max_bytes >> 20,
        });
    }
    let packed = tar.wait_with_output().await?;
    if !packed.status.success() {
        return Err(SandboxError::Other(format!(
            "packing the workspace failed: {}",
            String::from_utf8_lossy(&packed.stderr).trim()
        )));
    }
    Ok(archive)
}
