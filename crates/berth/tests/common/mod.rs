//! Running the `berth` binary in tests: a clean environment, waiting for the server to
//! listen, and stopping it with a signal.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// A `berth` command with a clean environment: no `BERTH_*` from the caller leaks in.
pub fn berth(dir: &Path) -> Command {
    let mut command = Command::new(BERTH);
    command.current_dir(dir).env("RUST_LOG", "warn");
    for (key, _) in std::env::vars() {
        if key.starts_with("BERTH_") {
            command.env_remove(key);
        }
    }
    command
}

/// Makes an API token for `alice` with `berth token create`, on the data in `dir/state`.
pub fn token(dir: &Path) -> String {
    let output = berth(dir)
        .args(["token", "create", "--user", "alice", "--data-dir", "state"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// A `berth` process that never outlives its test: it is killed when dropped, so a failed
/// assertion does not leave a server running (and holding the test's output pipes).
pub struct Process(Child);

impl std::ops::Deref for Process {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Process {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` with its stdout read line by line (stderr goes to the test's output).
fn spawn(
    command: &mut Command,
) -> (
    Process,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let mut child = Process(
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = child.stdout.take().expect("stdout is piped");
    (child, BufReader::new(stdout).lines())
}

/// Starts `berth server` and waits for the line that says where it listens. The caller stops
/// it with [`terminate`], which waits for it.
pub fn start_server(mut command: Command) -> (Process, String, Vec<String>) {
    let (child, mut lines) = spawn(&mut command);
    let mut seen = Vec::new();
    loop {
        let line = lines
            .next()
            .expect("the server prints where it listens")
            .unwrap();
        if let Some(url) = line.strip_prefix("berth listening on ") {
            return (child, url.to_string(), seen);
        }
        seen.push(line);
    }
}

pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    panic!("the server did not stop within 10 s of SIGTERM");
}

/// Starts `berth runner` and waits until it says it started.
pub fn start_runner(mut command: Command) -> Process {
    let (child, mut lines) = spawn(&mut command);
    loop {
        let line = lines.next().expect("the runner says it started").unwrap();
        if line.starts_with("berth runner ") && line.ends_with(" started") {
            return child;
        }
    }
}

/// A bare git repository served over plain ("dumb") HTTP on loopback, for tasks to clone.
pub struct GitRepo {
    pub url: String,
    pub allowed_host: String,
    _dir: tempfile::TempDir,
    _server: tokio::task::JoinHandle<()>,
}

impl GitRepo {
    pub async fn serve(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        for (path, contents) in files {
            std::fs::write(work.join(path), contents).unwrap();
        }
        let git = |args: &[&str], cwd: &Path| {
            let status = Command::new("git")
                .args(args)
                .current_dir(cwd)
                .status()
                .unwrap();
            assert!(status.success(), "git {args:?}");
        };
        git(&["init", "-q", "-b", "main"], &work);
        git(&["add", "-A"], &work);
        git(
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                "initial",
            ],
            &work,
        );
        git(&["clone", "-q", "--bare", "work", "repo.git"], dir.path());
        git(&["update-server-info"], &dir.path().join("repo.git"));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app =
            axum::Router::new().fallback_service(tower_http::services::ServeDir::new(dir.path()));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url: format!("http://{address}/repo.git"),
            allowed_host: format!("http://{address}"),
            _dir: dir,
            _server: server,
        }
    }
}

/// Polls `check` until it holds, failing after `limit` (a guard against hangs).
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
