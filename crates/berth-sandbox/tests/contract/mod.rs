//! What every sandbox backend promises, written once against [`Sandboxes`]: the Docker
//! backend's tests (tests/contract_docker.rs) and the Fly backend's (crates/berth-fly) run
//! these same checks. A test file includes this module and calls each check with its backend.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use berth_sandbox::{
    ExecRequest, ExecResult, Limits, Sandbox, SandboxError, SandboxSpec, Sandboxes, Stream,
};

/// A backend under test: where sandboxes come from, and the image they run.
pub struct Backend {
    pub sandboxes: Arc<dyn Sandboxes>,
    pub image: String,
}

/// A sandbox destroyed when the check ends, even when it fails: by the backend when the check
/// gets that far, else by the engine, where both backends' sandboxes end up in these tests
/// (the fake Fly API's machines are containers named by their machine id).
pub struct Guard(pub Box<dyn Sandbox>);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", self.0.id()])
            .output();
    }
}

impl std::ops::Deref for Guard {
    type Target = dyn Sandbox;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}

pub fn spec(backend: &Backend, installation: &str, limits: Limits) -> SandboxSpec {
    SandboxSpec {
        installation: installation.to_string(),
        task_id: uuid::Uuid::now_v7().to_string(),
        attempt: 1,
        node_id: "contract-node".to_string(),
        image: backend.image.clone(),
        limits,
    }
}

pub async fn sandbox_with(backend: &Backend, limits: Limits) -> Guard {
    let spec = spec(backend, "berth-contract", limits);
    Guard(backend.sandboxes.create(&spec).await.unwrap())
}

pub async fn run(sandbox: &Guard, command: &str) -> ExecResult {
    sandbox
        .exec(&ExecRequest::new(command), &mut |_, _| {})
        .await
        .unwrap()
}

pub async fn stdout_of(sandbox: &Guard, command: &str) -> String {
    let result = run(sandbox, command).await;
    assert_eq!(
        result.exit_code,
        Some(0),
        "{command}: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    String::from_utf8(result.stdout).unwrap()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// A repository with a text file and a binary one, committed, copied into a fresh sandbox.
async fn sandbox_with_repo(backend: &Backend) -> (Guard, tempfile::TempDir, String) {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("a.txt"), "first\n").unwrap();
    std::fs::write(dir.join("gone.txt"), "to delete\n").unwrap();
    std::fs::write(dir.join("blob.bin"), (0..=255u8).collect::<Vec<_>>()).unwrap();
    let moving = "a file that moves\nwith enough lines\nto be a rename\n";
    std::fs::write(dir.join("old-name.txt"), moving).unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "base"]);
    let sandbox = sandbox_with(backend, Limits::default()).await;
    sandbox.copy_in(dir, 1 << 30).await.unwrap();
    let base = git(dir, &["rev-parse", "HEAD"]).trim().to_string();
    (sandbox, repo, base)
}

/// Copy in, edit (text, binary, new, deleted, and a commit made inside), and the diff applies
/// on the host to the very same tree.
pub async fn copy_in_exec_and_diff_round_trip(backend: &Backend) {
    let (sandbox, repo, base) = sandbox_with_repo(backend).await;
    assert_eq!(
        stdout_of(&sandbox, "stat -c %u a.txt; id -u").await,
        "1000\n1000\n"
    );
    let script = "printf 'second\\n' >> a.txt \
        && git -c user.name=m -c user.email=m@m commit -qam 'made inside' \
        && printf 'new\\n' > b.txt && rm gone.txt && mv old-name.txt new-name.txt \
        && printf '\\001\\002\\377' >> blob.bin";
    stdout_of(&sandbox, script).await;
    let diff = sandbox.diff(&base).await.unwrap();
    let text = String::from_utf8_lossy(&diff);
    assert!(
        text.contains("+second") && text.contains("+++ b/b.txt"),
        "{text}"
    );
    assert!(text.contains("rename from old-name.txt"), "{text}");
    let patch = repo.path().join("change.patch");
    std::fs::write(&patch, &diff).unwrap();
    git(repo.path(), &["apply", "--index", patch.to_str().unwrap()]);
    let host = std::fs::read(repo.path().join("blob.bin")).unwrap();
    assert_eq!(host.len(), 259, "the binary change came through whole");
    assert!(!repo.path().join("gone.txt").exists());
    assert!(repo.path().join("new-name.txt").exists());
    sandbox.destroy().await.unwrap();
}

/// A change too large to keep is an error, never a diff cut short.
pub async fn a_change_too_large_is_an_error_not_a_cut_diff(backend: &Backend) {
    let (sandbox, _repo, base) = sandbox_with_repo(backend).await;
    let fill = "yes 'a line of text that fills the diff' | head -c 70000000 > big.txt";
    stdout_of(&sandbox, fill).await;
    let err = sandbox.diff(&base).await.unwrap_err();
    assert!(
        matches!(err, SandboxError::DiffTooLarge { limit_mib: 64 }),
        "{err}"
    );
    sandbox.destroy().await.unwrap();
}

/// A destroyed sandbox is gone: using it says so, and destroying it again is harmless.
pub async fn a_destroyed_sandbox_is_gone(backend: &Backend) {
    let sandbox = sandbox_with(backend, Limits::default()).await;
    sandbox.destroy().await.unwrap();
    let gone = sandbox
        .exec(&ExecRequest::new("true"), &mut |_, _| {})
        .await;
    assert!(matches!(gone, Err(SandboxError::ContainerGone)), "{gone:?}");
    sandbox.destroy().await.unwrap();
}

/// The repository's own configuration cannot swap in another diff program.
pub async fn the_diff_is_gits_own(backend: &Backend) {
    let (sandbox, _repo, base) = sandbox_with_repo(backend).await;
    let script = "printf 'edit\\n' >> a.txt \
        && git config diff.external /bin/false \
        && printf '* diff=forged\\n' > .git/info/attributes \
        && git config diff.forged.textconv 'echo forged'";
    stdout_of(&sandbox, script).await;
    let diff = String::from_utf8(sandbox.diff(&base).await.unwrap()).unwrap();
    assert!(diff.contains("+edit") && !diff.contains("forged"), "{diff}");
    assert!(sandbox.diff("not-a-commit; rm -rf /").await.is_err());
    sandbox.destroy().await.unwrap();
}

/// A workspace over the bound is refused as such.
pub async fn a_workspace_over_the_bound_is_refused(backend: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big"), vec![7u8; 256 << 10]).unwrap();
    let sandbox = sandbox_with(backend, Limits::default()).await;
    let err = sandbox.copy_in(dir.path(), 64 << 10).await.unwrap_err();
    assert!(
        matches!(err, SandboxError::WorkspaceTooLarge { .. }),
        "{err}"
    );
    sandbox.destroy().await.unwrap();
}

/// Arguments are data, never run; output reaches the callback and the result alike.
pub async fn arguments_are_not_run_and_output_is_passed_on(backend: &Backend) {
    let sandbox = sandbox_with(backend, Limits::default()).await;
    let request = ExecRequest {
        args: vec!["$(touch /tmp/pwned)".into()],
        ..ExecRequest::new("printf '%s' \"$1\"; echo oops >&2; exit 3")
    };
    let mut seen = Vec::new();
    let result = sandbox
        .exec(&request, &mut |stream, bytes| {
            seen.push((stream, bytes.to_vec()))
        })
        .await
        .unwrap();
    assert_eq!(result.exit_code, Some(3));
    assert_eq!(result.stdout, b"$(touch /tmp/pwned)");
    assert_eq!(result.stderr, b"oops\n");
    let streamed = |wanted| -> Vec<u8> {
        let chunks = seen.iter().filter(|(stream, _)| *stream == wanted);
        chunks.flat_map(|(_, bytes)| bytes.clone()).collect()
    };
    assert_eq!(streamed(Stream::Stdout), result.stdout);
    assert_eq!(streamed(Stream::Stderr), result.stderr);
    assert_eq!(
        stdout_of(&sandbox, "test -e /tmp/pwned || echo safe").await,
        "safe\n"
    );
    sandbox.destroy().await.unwrap();
}

/// A timeout ends the command and everything it started.
pub async fn a_timeout_kills_the_command_and_its_children(backend: &Backend) {
    let sandbox = sandbox_with(backend, Limits::default()).await;
    let before = stdout_of(&sandbox, "pgrep -xc sleep || true").await;
    let request = ExecRequest {
        timeout: Duration::from_secs(1),
        ..ExecRequest::new("sleep 300 & sleep 301; echo never")
    };
    let result = sandbox.exec(&request, &mut |_, _| {}).await.unwrap();
    assert!(result.timed_out, "{result:?}");
    assert_eq!(result.exit_code, None);
    assert!(!String::from_utf8_lossy(&result.stdout).contains("never"));
    let after = stdout_of(&sandbox, "pgrep -xc sleep || true").await;
    assert_eq!(after, before, "only the sandbox's own sleep is left");
    sandbox.destroy().await.unwrap();
}

/// Running out of memory is reported as such, and the sandbox goes on working.
pub async fn a_memory_hog_is_reported_oom_killed(backend: &Backend) {
    let limits = Limits {
        memory_bytes: 256 << 20,
        ..Limits::default()
    };
    let sandbox = sandbox_with(backend, limits).await;
    let hog = "x=$(head -c 700000000 /dev/zero | tr '\\0' a); echo ${#x}";
    let result = run(&sandbox, hog).await;
    assert!(result.oom_killed, "{result:?}");
    let fine = run(&sandbox, "false").await;
    assert!(!fine.oom_killed, "a plain failure is not an OOM kill");
    assert_eq!(stdout_of(&sandbox, "echo still here").await, "still here\n");
    sandbox.destroy().await.unwrap();
}

/// Output past the bound is cut, head and tail kept.
pub async fn output_over_the_bound_is_cut(backend: &Backend) {
    let sandbox = sandbox_with(backend, Limits::default()).await;
    let request = ExecRequest {
        max_output: 64 << 10,
        ..ExecRequest::new("echo HEAD; head -c 1000000 /dev/zero | tr '\\0' x; echo; echo TAIL")
    };
    let result = sandbox.exec(&request, &mut |_, _| {}).await.unwrap();
    assert!(result.truncated);
    assert!(
        result.stdout.len() <= (64 << 10) + 256,
        "{}",
        result.stdout.len()
    );
    let text = String::from_utf8_lossy(&result.stdout);
    assert!(text.starts_with("HEAD") && text.trim_end().ends_with("TAIL"));
    sandbox.destroy().await.unwrap();
}

/// put_file writes any bytes as a file the sandbox user owns, and read_file reads them back.
pub async fn files_go_in_and_out_whole(backend: &Backend) {
    let sandbox = sandbox_with(backend, Limits::default()).await;
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    sandbox.put_file("/tmp/data.bin", &bytes).await.unwrap();
    assert_eq!(
        stdout_of(&sandbox, "stat -c '%u %a' /tmp/data.bin").await,
        "1000 644\n"
    );
    assert_eq!(sandbox.read_file("/tmp/data.bin").await.unwrap(), bytes);
    sandbox.put_file("/tmp/empty", b"").await.unwrap();
    assert_eq!(sandbox.read_file("/tmp/empty").await.unwrap(), b"");
    assert!(sandbox.read_file("/tmp/no-such-file").await.is_err());
    // A link the sandbox user planted where the file goes is replaced, never followed.
    stdout_of(&sandbox, "ln -s /etc/hostname /tmp/planted").await;
    let before = sandbox.read_file("/etc/hostname").await.unwrap();
    sandbox.put_file("/tmp/planted", b"mine\n").await.unwrap();
    assert_eq!(sandbox.read_file("/etc/hostname").await.unwrap(), before);
    assert_eq!(
        stdout_of(&sandbox, "test -L /tmp/planted || cat /tmp/planted").await,
        "mine\n"
    );
    sandbox.destroy().await.unwrap();
}

/// An installation's task sandboxes are listed with their task, attempt and node, another
/// installation's are not, and removing one (twice) leaves the rest.
pub async fn task_sandboxes_are_listed_by_installation_and_removed(backend: &Backend) {
    let mine = format!("contract-{}", uuid::Uuid::now_v7().simple());
    let other = format!("contract-{}", uuid::Uuid::now_v7().simple());
    let make = |installation: &str| spec(backend, installation, Limits::default());
    let (first, second, theirs) = (make(&mine), make(&mine), make(&other));
    let a = Guard(backend.sandboxes.create(&first).await.unwrap());
    let _b = Guard(backend.sandboxes.create(&second).await.unwrap());
    let _c = Guard(backend.sandboxes.create(&theirs).await.unwrap());
    let mut listed = backend.sandboxes.task_sandboxes(&mine).await.unwrap();
    listed.sort_by(|x, y| x.task_id.cmp(&y.task_id));
    let tasks: Vec<_> = listed.iter().map(|c| c.task_id.clone()).collect();
    assert_eq!(tasks, vec![first.task_id.clone(), second.task_id.clone()]);
    assert!(listed
        .iter()
        .all(|c| c.attempt == 1 && c.node_id == "contract-node"));
    backend.sandboxes.remove(a.id()).await.unwrap();
    backend.sandboxes.remove(a.id()).await.unwrap();
    let left = backend.sandboxes.task_sandboxes(&mine).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].task_id, second.task_id);
    for id in [&left[0].id] {
        backend.sandboxes.remove(id).await.unwrap();
    }
    let gone = backend.sandboxes.task_sandboxes(&other).await.unwrap();
    backend.sandboxes.remove(&gone[0].id).await.unwrap();
}
