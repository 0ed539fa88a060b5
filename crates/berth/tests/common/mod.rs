//! Running the `berth` binary in tests: a clean environment, waiting for the server to
//! listen, and stopping it with a signal.
#![allow(dead_code, unused_imports)]

use std::path::Path;
use std::process::Command;

pub use berth_testkit::docker::containers_labelled;
pub use berth_testkit::eventually;
pub use berth_testkit::process::{signal, spawn_lines, terminate, Process};

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

/// Starts `berth server` and waits for the line that says where it listens. The caller stops
/// it with [`terminate`], which waits for it.
pub fn start_server(mut command: Command) -> (Process, String, Vec<String>) {
    let (child, mut lines) = spawn_lines(&mut command);
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

/// Starts `berth runner` and waits until it says it started.
pub fn start_runner(mut command: Command) -> Process {
    let (child, mut lines) = spawn_lines(&mut command);
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
